//===- Outputs.h - an entry point's outputs as a safetensors file -*- C++ -*-===//
//
// What `eval` and `grad` write, whichever program ran the code (dsv3c's JIT
// or dsv3-run's artifact): every output under its name, scalars as [1],
// chosen experts sorted per token (for comparison with references),
// gradients of stacked expert parameters split back into hub names.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_IO_OUTPUTS_H
#define DSV3_RUNTIME_IO_OUTPUTS_H

#include "runtime/abi/Abi.h"
#include "runtime/support/Error.h"

#include <string>
#include <vector>

namespace dsv3::rt {

/// Writes `buffers` (the outputs of `entry`) to `path` with `producer` in
/// the metadata; appends one line per scalar output
/// ("loss      6.300869  (perplexity 545.046)") to `summary`. Sorts each
/// token's expert choices in place.
Error writeOutputs(const EntryPoint &entry, OutputBuffers &buffers, const std::string &path,
                   const std::string &producer, std::string &summary);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_IO_OUTPUTS_H
