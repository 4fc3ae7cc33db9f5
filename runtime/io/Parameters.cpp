//===- Parameters.cpp - checkpoints <-> the flat parameter buffer ---------===//
#include "runtime/io/Parameters.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <unistd.h>

namespace dsv3::rt {
namespace {

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Error fail(const WeightStore &store, const std::string &msg) {
  return fileError(store.description(), msg);
}

/// Block-scaled FP8 weight: w[i,j] = q[i,j] * scale_inv[i/128, j/128].
Error dequantizeFP8(const WeightStore &store, const TensorInfo &t, float *dst) {
  std::string scaleName = t.name + "_scale_inv";
  const TensorInfo *s = store.lookup(scaleName);
  if (!s)
    return fail(store, "FP8 tensor '" + t.name + "' has no '" + scaleName + "'");
  if (t.shape.size() != 2 || s->shape.size() != 2)
    return fail(store, "FP8 tensor '" + t.name + "' and its scales must be 2-D");
  int64_t rows = t.shape[0], cols = t.shape[1];
  constexpr int64_t block = 128;
  // The published layout uses 128x128 blocks: scales [ceil(r/128), ceil(c/128)].
  if (s->shape[0] != (rows + 127) / 128 || s->shape[1] != (cols + 127) / 128)
    return fail(store, "scale tensor '" + scaleName + "' has shape " +
                           shapeString(s->shape) + ", expected " +
                           shapeString({(rows + 127) / 128, (cols + 127) / 128}));
  std::vector<float> scales(s->numElements());
  if (Error e = convertToF32(*s, scales.data()))
    return e;
  if (Error e = convertToF32(t, dst))
    return e;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      dst[i * cols + j] *= scales[(i / block) * s->shape[1] + j / block];
  return Error::success();
}

/// Converts one checked tensor into the buffer.
Error loadTensor(const WeightStore &store, const std::string &name, float *dst) {
  const TensorInfo *t = store.lookup(name);
  Error e = t->dtype == DType::F8_E4M3 ? dequantizeFP8(store, *t, dst)
                                       : convertToF32(*t, dst);
  if (e)
    return e;
  for (int64_t i = 0, n = t->numElements(); i < n; ++i)
    if (!std::isfinite(dst[i]))
      return fail(store, "tensor '" + name + "' holds a non-finite value at element " +
                             std::to_string(i));
  return Error::success();
}

/// Calls `fn(hub name, shape, offset)` for every checkpoint tensor of a slot.
template <typename Fn> Error forEachTensor(const ParamSlot &slot, Fn fn) {
  for (const SlotTensor &t : slotTensors(slot))
    if (Error e = fn(t.name, t.shape, t.offset))
      return e;
  return Error::success();
}

Error allocate(const ParamLayout &layout, std::vector<float> &buffer) {
  if (Error e = checkParameterMemory(layout.totalElements))
    return e;
  buffer.assign(std::max<int64_t>(layout.totalElements, 1), 0.0f);
  return Error::success();
}


} // namespace

Error checkParameterMemory(int64_t elements) {
  double bytes = double(std::max<int64_t>(elements, 1)) * sizeof(float);
  double physical = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  if (physical > 0 && bytes > physical) {
    char msg[160];
    std::snprintf(msg, sizeof msg,
                  "the model's parameters need %.1f GiB, more than this machine's "
                  "memory (%.1f GiB)",
                  bytes / (1 << 30), physical / (1 << 30));
    return Error::failure(msg);
  }
  return Error::success();
}

Error loadParameters(const WeightStore &store, const ParamLayout &layout,
                     std::vector<float> &buffer) {
  // Check every tensor before allocating anything.
  for (const ParamSlot &slot : layout.slots)
    if (Error e = forEachTensor(slot, [&](const std::string &name,
                                          const std::vector<int64_t> &shape, int64_t) {
          const TensorInfo *t = store.lookup(name);
          if (!t)
            return fail(store, "missing tensor '" + name + "'");
          if (t->shape != shape)
            return fileError(t->file, "tensor '" + name + "' has shape " +
                                          shapeString(t->shape) + " but the config implies " +
                                          shapeString(shape));
          return Error::success();
        }))
      return e;
  if (Error e = allocate(layout, buffer))
    return fileError(store.description(), e.message());
  for (const ParamSlot &slot : layout.slots)
    if (Error e = forEachTensor(slot, [&](const std::string &name,
                                          const std::vector<int64_t> &, int64_t offset) {
          return loadTensor(store, name, buffer.data() + offset);
        }))
      return e;
  return Error::success();
}

namespace {

/// A generator seed for the checkpoint tensor `name`: FNV-1a of the name,
/// mixed with the run's seed (splitmix64's finaliser).
uint64_t tensorSeed(uint64_t seed, const std::string &name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name)
    h = (h ^ c) * 1099511628211ull;
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (h | 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

} // namespace

Error initializeParameters(const ParamLayout &layout, uint64_t seed, double std,
                           std::vector<float> &buffer) {
  if (Error e = allocate(layout, buffer))
    return e;
  for (const ParamSlot &slot : layout.slots) {
    for (const SlotTensor &t : slotTensors(slot)) {
      float *dst = buffer.data() + t.offset;
      if (slot.role == "norm") {
        std::fill(dst, dst + t.count, 1.0f);
      } else if (slot.role == "routing_bias") {
        std::fill(dst, dst + t.count, 0.0f);
      } else {
        std::mt19937_64 rng(tensorSeed(seed, t.name));
        std::normal_distribution<float> normal(0.0f, static_cast<float>(std));
        for (int64_t i = 0; i < t.count; ++i)
          dst[i] = normal(rng);
      }
    }
  }
  return Error::success();
}

std::vector<SlotTensor> slotTensors(const ParamSlot &slot) {
  size_t star = slot.name.find('*');
  if (star == std::string::npos || slot.shape.empty())
    return {{slot.name, slot.shape, slot.offset, slot.numElements()}};
  std::vector<SlotTensor> tensors;
  std::vector<int64_t> each(slot.shape.begin() + 1, slot.shape.end());
  int64_t stride = slot.shape[0] ? slot.numElements() / slot.shape[0] : 0;
  for (int64_t i = 0; i < slot.shape[0]; ++i)
    tensors.push_back({slot.name.substr(0, star) + std::to_string(slot.stackBase + i) +
                           slot.name.substr(star + 1),
                       each, slot.offset + i * stride, stride});
  return tensors;
}

void addSplitTensor(SafetensorsWriter &writer, const std::string &name,
                    const std::vector<int64_t> &shape, const float *data) {
  ParamSlot slot;
  slot.name = name;
  slot.shape = shape;
  for (const SlotTensor &t : slotTensors(slot))
    writer.addF32(t.name, t.shape, data + t.offset, t.count);
}

void addParameters(SafetensorsWriter &writer, const ParamLayout &layout,
                   const std::vector<float> &buffer) {
  for (const ParamSlot &slot : layout.slots)
    for (const SlotTensor &t : slotTensors(slot))
      writer.addF32(t.name, t.shape, buffer.data() + t.offset, t.count);
}

} // namespace dsv3::rt
