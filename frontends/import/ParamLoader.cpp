//===- ParamLoader.cpp - checkpoint -> flat parameter buffer --------------===//
#include "frontends/import/ParamLoader.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <unistd.h>
#include <random>

namespace dsv3 {
namespace {

std::string shapeString(llvm::ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

llvm::Error fail(const WeightStore &store, const llvm::Twine &msg) {
  return llvm::createStringError(store.description().str() + ": " + msg.str());
}

/// Block-scaled FP8 weight: w[i,j] = q[i,j] * scale_inv[i/128, j/128].
llvm::Error dequantizeFP8(const WeightStore &store, const TensorInfo &t,
                          float *dst) {
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
  if (llvm::Error e = convertToF32(*s, scales.data()))
    return e;
  if (llvm::Error e = convertToF32(t, dst))
    return e;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      dst[i * cols + j] *= scales[(i / block) * s->shape[1] + j / block];
  return llvm::Error::success();
}

/// Converts one checked tensor into the buffer.
llvm::Error loadTensor(const WeightStore &store, const std::string &name,
                       float *dst) {
  const TensorInfo *t = store.lookup(name);
  llvm::Error e = t->dtype == DType::F8_E4M3 ? dequantizeFP8(store, *t, dst)
                                             : convertToF32(*t, dst);
  if (e)
    return e;
  for (int64_t i = 0, n = t->numElements(); i < n; ++i)
    if (!std::isfinite(dst[i]))
      return fail(store, "tensor '" + name + "' holds a non-finite value at element " +
                             std::to_string(i));
  return llvm::Error::success();
}

/// Calls `fn(hub name, shape, offset)` for every checkpoint tensor of a slot
/// (a stacked slot is one tensor per expert).
template <typename Fn>
llvm::Error forEachTensor(const ParamSlot &slot, Fn fn) {
  size_t star = slot.name.find('*');
  if (star == std::string::npos)
    return fn(slot.name, llvm::ArrayRef<int64_t>(slot.shape), slot.offset);
  llvm::ArrayRef<int64_t> each = llvm::ArrayRef<int64_t>(slot.shape).drop_front();
  int64_t stride = slot.numElements() / slot.shape[0];
  for (int64_t i = 0; i < slot.shape[0]; ++i)
    if (llvm::Error e = fn(slot.name.substr(0, star) + std::to_string(i) +
                               slot.name.substr(star + 1),
                           each, slot.offset + i * stride))
      return e;
  return llvm::Error::success();
}

llvm::Error allocate(const ParamLayout &layout, std::vector<float> &buffer) {
  if (llvm::Error e = checkParameterMemory(layout.totalElements))
    return e;
  buffer.assign(std::max<int64_t>(layout.totalElements, 1), 0.0f);
  return llvm::Error::success();
}

} // namespace

llvm::Error checkParameterMemory(int64_t elements) {
  double bytes = double(std::max<int64_t>(elements, 1)) * sizeof(float);
  double physical = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  if (physical > 0 && bytes > physical)
    return llvm::createStringError(llvm::formatv(
        "the model's parameters need {0:F1} GiB, more than this machine's "
        "memory ({1:F1} GiB)", bytes / (1 << 30), physical / (1 << 30)).str());
  return llvm::Error::success();
}

llvm::Error loadParameters(const WeightStore &store, const ParamLayout &layout,
                           std::vector<float> &buffer) {
  // Check every tensor before allocating anything.
  for (const ParamSlot &slot : layout.slots)
    if (llvm::Error e = forEachTensor(
            slot, [&](const std::string &name, llvm::ArrayRef<int64_t> shape,
                      int64_t) -> llvm::Error {
              const TensorInfo *t = store.lookup(name);
              if (!t)
                return fail(store, "missing tensor '" + name + "'");
              if (llvm::ArrayRef<int64_t>(t->shape) != shape)
                return llvm::createStringError(
                    t->file + ": tensor '" + name + "' has shape " +
                    shapeString(t->shape) + " but the config implies " +
                    shapeString(shape));
              return llvm::Error::success();
            }))
      return e;
  if (llvm::Error e = allocate(layout, buffer))
    return llvm::createStringError(store.description().str() + ": " +
                                   llvm::toString(std::move(e)));
  for (const ParamSlot &slot : layout.slots)
    if (llvm::Error e = forEachTensor(
            slot, [&](const std::string &name, llvm::ArrayRef<int64_t> shape,
                      int64_t offset) {
              return loadTensor(store, name, buffer.data() + offset);
            }))
      return e;
  return llvm::Error::success();
}

llvm::Error initializeParameters(const ParamLayout &layout, uint64_t seed,
                                 double std, std::vector<float> &buffer) {
  if (llvm::Error e = allocate(layout, buffer))
    return e;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, static_cast<float>(std));
  for (const ParamSlot &slot : layout.slots) {
    llvm::StringRef name(slot.name);
    float *dst = buffer.data() + slot.offset;
    int64_t n = slot.numElements();
    if (name.ends_with("norm.weight"))
      std::fill(dst, dst + n, 1.0f);
    else if (name.ends_with("e_score_correction_bias"))
      std::fill(dst, dst + n, 0.0f);
    else
      for (int64_t i = 0; i < n; ++i)
        dst[i] = normal(rng);
  }
  return llvm::Error::success();
}

void addSplitTensor(SafetensorsWriter &writer, const std::string &name,
                    llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<float> data) {
  size_t star = name.find('*');
  if (star == std::string::npos) {
    writer.addF32(name, shape, data);
    return;
  }
  llvm::ArrayRef<int64_t> each = shape.drop_front();
  size_t stride = data.size() / shape[0];
  for (int64_t i = 0; i < shape[0]; ++i)
    writer.addF32(name.substr(0, star) + std::to_string(i) + name.substr(star + 1),
                  each, data.slice(i * stride, stride));
}

void addParameters(SafetensorsWriter &writer, const ParamLayout &layout,
                   llvm::ArrayRef<float> buffer) {
  for (const ParamSlot &slot : layout.slots)
    addSplitTensor(writer, slot.name, slot.shape,
                   buffer.slice(slot.offset, slot.numElements()));
}

} // namespace dsv3
