//===- Executable.h - compiled entry points the runtime can call -*- C++ -*-===//
//
// The execution layer's view of compiled code, whatever produced it: a
// parameter layout, entry points, and for each entry point the packed
// C-interface wrapper (`void(void **)`, one pointer per argument, each
// pointing at a memref descriptor). JIT-compiled modules (runtime/jit, which
// needs LLVM) and ahead-of-time shared objects fill in the wrappers; calling
// them needs nothing but this file.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_EXEC_EXECUTABLE_H
#define DSV3_RUNTIME_EXEC_EXECUTABLE_H

#include "runtime/abi/Abi.h"
#include "runtime/support/Error.h"

#include <string>
#include <vector>

namespace dsv3::rt {

using PackedEntry = void (*)(void **);

/// "[2x32]" (a scalar is "[]"), for messages.
std::string shapeString(const std::vector<int64_t> &shape);

class Executable {
public:
  virtual ~Executable() = default;

  const ParamLayout &layout() const { return layout_; }
  const std::vector<EntryPoint> &entries() const { return entries_; }
  const EntryPoint *entry(const std::string &name) const;

  /// Calls `name(params, inputs..., outputs...)` with contiguous row-major
  /// host buffers; `params` holds layout().totalElements floats. Fails,
  /// calling nothing, when a buffer's shape is not the signature's.
  Error call(const std::string &name, float *params, const std::vector<BufferArg> &inputs,
             const std::vector<BufferArg> &outputs) const;

protected:
  Executable(ParamLayout layout, std::vector<EntryPoint> entries)
      : layout_(std::move(layout)), entries_(std::move(entries)),
        packed_(entries_.size(), nullptr) {}
  /// Set by the subclass once its code is loaded, in entries() order.
  void setPacked(size_t entryIndex, PackedEntry fn) { packed_[entryIndex] = fn; }

private:
  ParamLayout layout_;
  std::vector<EntryPoint> entries_;
  std::vector<PackedEntry> packed_;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_EXEC_EXECUTABLE_H
