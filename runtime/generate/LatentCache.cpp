//===- LatentCache.cpp - the MLA latent KV cache of a generation ----------===//
#include "runtime/generate/LatentCache.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace dsv3::rt {
namespace {

/// float32 -> BF16 bits, rounded to nearest even (NaN stays NaN).
uint16_t toBF16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u)
    return uint16_t((bits >> 16) | 0x40);
  bits += 0x7FFFu + ((bits >> 16) & 1);
  return uint16_t(bits >> 16);
}

} // namespace

LatentCache::LatentCache(const std::vector<int64_t> &shape, ElementType type)
    : shape_(shape), type_(type), data_(numElements(shape) * elementSize(type), 0) {
  assert(shape.size() == 4 && "kv_cache is [layers, slots, capacity, row]");
  assert(type != ElementType::I64 && "a cache holds f32 or bf16 rows");
}

void LatentCache::write(const HostTensor &rows, int64_t firstLayer, int64_t b,
                        int64_t count, int64_t slot, int64_t position) {
  int64_t n = rows.shape[0], batch = rows.shape[1], t = rows.shape[2],
          w = rowWidth();
  count = std::min({count, t, capacity() - position});
  for (int64_t l = 0; l < n; ++l)
    for (int64_t i = 0; i < count; ++i) {
      const float *from = rows.f32() + ((l * batch + b) * t + i) * w;
      int64_t to =
          (((firstLayer + l) * slots() + slot) * capacity() + position + i) * w;
      if (type_ == ElementType::F32) {
        std::memcpy(data_.data() + to * sizeof(float), from, w * sizeof(float));
      } else {
        auto *dst = reinterpret_cast<uint16_t *>(data_.data()) + to;
        for (int64_t c = 0; c < w; ++c)
          dst[c] = toBF16(from[c]);
      }
    }
}

float LatentCache::at(int64_t layer, int64_t slot, int64_t position,
                      int64_t c) const {
  int64_t i = ((layer * slots() + slot) * capacity() + position) * rowWidth() + c;
  if (type_ == ElementType::F32)
    return reinterpret_cast<const float *>(data_.data())[i];
  uint32_t bits = uint32_t(reinterpret_cast<const uint16_t *>(data_.data())[i]) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

} // namespace dsv3::rt
