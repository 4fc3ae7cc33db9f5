//===- Abi.cpp - host buffers for entry-point outputs ---------------------===//
#include "runtime/abi/Abi.h"

namespace dsv3::rt {

OutputBuffers::OutputBuffers(const EntryPoint &entry,
                             const std::vector<std::vector<int64_t>> &shapes)
    : floats(shapes.size()), ints(shapes.size()) {
  // One buffer per output of the entry; extra shapes are ignored (the call
  // then reports the count mismatch).
  for (size_t i = 0; i < shapes.size() && i < entry.outputs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : shapes[i])
      n *= d;
    if (entry.outputType(i) == ElementType::I64) {
      ints[i].assign(n, 0);
      args.push_back({ints[i].data(), shapes[i]});
    } else {
      floats[i].assign(n, 0.f);
      args.push_back({floats[i].data(), shapes[i]});
    }
  }
}

} // namespace dsv3::rt
