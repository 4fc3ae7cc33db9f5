//===- Parameters.h - checkpoints <-> the flat parameter buffer -*- C++ -*-===//
//
// Part of the runtime core (no LLVM). Compiled modules read every parameter
// from one float32 buffer laid out as rt::ParamLayout says; these functions
// fill it from a hub checkpoint (dequantising published FP8 blocks), from a
// seed, and write it back as hub-named tensors (a stacked slot `...experts.*.`
// becomes one tensor per expert).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_IO_PARAMETERS_H
#define DSV3_RUNTIME_IO_PARAMETERS_H

#include "runtime/abi/Abi.h"
#include "runtime/io/Safetensors.h"

#include <vector>

namespace dsv3::rt {

/// Fails when `elements` floats exceed this machine's physical memory.
Error checkParameterMemory(int64_t elements);

/// Checks every tensor the layout names (presence, shape), then converts
/// them into `buffer`; non-finite values are errors. An expert-sharded slot
/// reads the experts from its stackBase on.
Error loadParameters(const WeightStore &store, const ParamLayout &layout,
                     std::vector<float> &buffer);

/// Fresh parameters: norms 1, routing biases 0, everything else
/// N(0, std^2). Each checkpoint tensor (each expert of a stack) draws from
/// its own generator, seeded by `seed` and its name, so the values depend
/// neither on the layout's order (which follows the compiled module) nor
/// on how experts are sharded.
Error initializeParameters(const ParamLayout &layout, uint64_t seed, double std,
                           std::vector<float> &buffer);

/// One checkpoint tensor of a slot: a stacked slot (a '*' in its name) is
/// one tensor per expert, numbered from the slot's stackBase.
struct SlotTensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, count = 0; ///< elements of the flat buffer
};
std::vector<SlotTensor> slotTensors(const ParamSlot &slot);

/// Adds `data` (shaped `shape`) under `name`, split per expert when the name
/// holds a '*'.
void addSplitTensor(SafetensorsWriter &writer, const std::string &name,
                    const std::vector<int64_t> &shape, const float *data);

/// Adds every parameter of `buffer` under its hub name (an expert-sharded
/// slot's experts from its stackBase on).
void addParameters(SafetensorsWriter &writer, const ParamLayout &layout,
                   const std::vector<float> &buffer);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_IO_PARAMETERS_H
