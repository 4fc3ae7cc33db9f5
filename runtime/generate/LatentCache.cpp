//===- LatentCache.cpp - the MLA latent KV cache of a generation ----------===//
#include "runtime/generate/LatentCache.h"

#include <algorithm>
#include <cassert>

namespace dsv3::rt {

LatentCache::LatentCache(const std::vector<int64_t> &shape)
    : shape_(shape), data_(numElements(shape), 0.0f) {
  assert(shape.size() == 4 && "kv_cache is [layers, slots, capacity, row]");
}

void LatentCache::write(const HostTensor &rows, int64_t firstLayer, int64_t b,
                        int64_t count, int64_t slot, int64_t position) {
  int64_t n = rows.shape[0], batch = rows.shape[1], t = rows.shape[2],
          w = rowWidth();
  count = std::min({count, t, capacity() - position});
  for (int64_t l = 0; l < n; ++l)
    for (int64_t i = 0; i < count; ++i) {
      const float *from = rows.f32() + ((l * batch + b) * t + i) * w;
      std::copy(from, from + w,
                data_.begin() +
                    (((firstLayer + l) * slots() + slot) * capacity() +
                     position + i) *
                        w);
    }
}

const float *LatentCache::row(int64_t layer, int64_t slot,
                              int64_t position) const {
  return data_.data() +
         ((layer * slots() + slot) * capacity() + position) * rowWidth();
}

} // namespace dsv3::rt
