//===- ParamLoader.cpp - checkpoint -> flat parameter buffer --------------===//
#include "frontends/import/ParamLoader.h"

#include "llvm/ADT/StringExtras.h"

#include <cmath>
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

llvm::Error loadTensor(const WeightStore &store, const std::string &name,
                       llvm::ArrayRef<int64_t> shape, float *dst) {
  const TensorInfo *t = store.lookup(name);
  if (!t)
    return fail(store, "missing tensor '" + name + "'");
  if (llvm::ArrayRef<int64_t>(t->shape) != shape)
    return llvm::createStringError(t->file + ": tensor '" + name + "' has shape " +
                                   shapeString(t->shape) +
                                   " but the config implies " + shapeString(shape));
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

} // namespace

llvm::Error loadParameters(const WeightStore &store, const ParamLayout &layout,
                           std::vector<float> &buffer) {
  buffer.assign(std::max<int64_t>(layout.totalElements, 1), 0.0f);
  for (const ParamSlot &slot : layout.slots) {
    float *dst = buffer.data() + slot.offset;
    size_t star = slot.name.find('*');
    if (star == std::string::npos) {
      if (llvm::Error e = loadTensor(store, slot.name, slot.shape, dst))
        return e;
      continue;
    }
    llvm::ArrayRef<int64_t> each = llvm::ArrayRef<int64_t>(slot.shape).drop_front();
    int64_t stride = slot.numElements() / slot.shape[0];
    for (int64_t i = 0; i < slot.shape[0]; ++i) {
      std::string name = slot.name.substr(0, star) + std::to_string(i) +
                         slot.name.substr(star + 1);
      if (llvm::Error e = loadTensor(store, name, each, dst + i * stride))
        return e;
    }
  }
  return llvm::Error::success();
}

void initializeParameters(const ParamLayout &layout, uint64_t seed, double std,
                          std::vector<float> &buffer) {
  buffer.assign(std::max<int64_t>(layout.totalElements, 1), 0.0f);
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
