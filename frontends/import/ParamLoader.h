//===- ParamLoader.h - checkpoint -> flat parameter buffer ------*- C++ -*-===//
//
// Fills the float32 parameter buffer whose layout dsv3-materialize-params
// recorded, from a (possibly sharded) safetensors checkpoint: F32/BF16/F16
// tensors convert, FP8 E4M3 weights with `weight_scale_inv` block scales are
// dequantised, stacked expert slots gather one tensor per expert.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_IMPORT_PARAMLOADER_H
#define DSV3_FRONTENDS_IMPORT_PARAMLOADER_H

#include "frontends/model/Safetensors.h"
#include "runtime/jit/JitModule.h"

#include <vector>

namespace dsv3 {

/// The float32 parameter buffer of `elements` must fit in this machine's
/// memory: absurd configs fail with a message, not in the allocator.
llvm::Error checkParameterMemory(int64_t elements);

/// Every slot of `layout` must be found in `store` with the slot's shape.
llvm::Error loadParameters(const WeightStore &store, const ParamLayout &layout,
                           std::vector<float> &buffer);

/// Seeded random initialisation (the [init] table of a description): norm
/// weights 1, routing biases 0, everything else N(0, std^2), drawn in layout
/// order so the same seed and model give the same weights.
llvm::Error initializeParameters(const ParamLayout &layout, uint64_t seed,
                                 double std, std::vector<float> &buffer);

/// Adds `data` under `name`; a stacked name (one '*') is split into one
/// tensor per leading index, under the hub names.
void addSplitTensor(SafetensorsWriter &writer, const std::string &name,
                    llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<float> data);

/// Adds every parameter of `buffer` under its hub name.
void addParameters(SafetensorsWriter &writer, const ParamLayout &layout,
                   llvm::ArrayRef<float> buffer);

} // namespace dsv3

#endif // DSV3_FRONTENDS_IMPORT_PARAMLOADER_H
