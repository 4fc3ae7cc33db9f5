//===- SharedObject.h - running an ahead-of-time artifact --------*- C++ -*-===//
//
// An artifact directory written by the compiler (`dsv3c compile
// --emit=artifact`): `model.so` exports `_dsv3_packed_<entry>` for every
// entry point of `manifest.json`. The kernels, `memrefCopy` and libm it
// calls are resolved from the running program, which must export them
// (dsv3-run links the kernels whole and exports its symbols).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_EXEC_SHAREDOBJECT_H
#define DSV3_RUNTIME_EXEC_SHAREDOBJECT_H

#include "runtime/abi/Manifest.h"
#include "runtime/exec/Executable.h"

#include <memory>

namespace dsv3::rt {

class SharedObjectExecutable : public Executable {
public:
  /// Reads DIR/manifest.json and loads DIR/model.so; errors name the file.
  static Expected<std::unique_ptr<SharedObjectExecutable>> open(const std::string &dir);
  ~SharedObjectExecutable() override;

  /// The manifest's producer data (mode, shapes, hub config), as JSON text.
  const std::string &extraJson() const { return extra; }

private:
  SharedObjectExecutable(Manifest manifest, void *handle)
      : Executable(std::move(manifest.layout), std::move(manifest.entries)),
        extra(std::move(manifest.extraJson)), handle(handle) {}
  std::string extra;
  void *handle;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_EXEC_SHAREDOBJECT_H
