//===- JitModule.h - JIT-compiled dsv3 module -------------------*- C++ -*-===//
//
// Last stage of the pipeline: takes the LLVM-dialect module that
// buildLLVMPipeline produced, compiles it at O3 for the host CPU with
// MLIR's ExecutionEngine, binds the runtime microkernels, and calls entry
// points with plain host buffers.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_JIT_JITMODULE_H
#define DSV3_RUNTIME_JIT_JITMODULE_H

#include "runtime/exec/Executable.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <memory>
#include <string>
#include <vector>

namespace dsv3 {

/// A module compiled in this process (ORC JIT), callable through the
/// runtime's Executable interface.
class JitModule : public rt::Executable {
public:
  /// Compiles `module` (LLVM dialect). Reads the parameter layout and entry
  /// point signatures before translation. With `objectPath`, the machine
  /// code is also written there (atomically) for `load`.
  static llvm::Expected<std::unique_ptr<JitModule>>
  compile(mlir::ModuleOp module, unsigned optLevel = 3,
          llvm::StringRef objectPath = "");

  /// Links an object written by `compile` (same compiler build and CPU)
  /// instead of compiling: the compile cache's warm path.
  static llvm::Expected<std::unique_ptr<JitModule>>
  load(llvm::StringRef objectPath, rt::ParamLayout layout,
       std::vector<rt::EntryPoint> entries);

private:
  JitModule(rt::ParamLayout layout, std::vector<rt::EntryPoint> entries)
      : rt::Executable(std::move(layout), std::move(entries)) {}

  std::unique_ptr<mlir::ExecutionEngine> engine_;
  std::unique_ptr<llvm::orc::LLJIT> linked_; // when loaded from an object
};

/// Reads `dsv3.param_layout` / `dsv3.param_count` from a module.
llvm::Expected<rt::ParamLayout> readParamLayout(mlir::ModuleOp module);

/// The entry points of an LLVM-dialect module (functions carrying
/// `dsv3.inputs`, `dsv3.outputs`) with their typed signatures.
std::vector<rt::EntryPoint> readEntryPoints(mlir::ModuleOp module);

/// On-disk cache of compiled modules: `<dir>/<key>.o` holds the machine
/// code and `<dir>/<key>.json` what is needed to call it (the manifest:
/// parameter layout and typed entry points). The key hashes the
/// input IR, the options that shape the code, this compiler's build and the
/// host CPU, so a stale or foreign entry is never used.
class CompileCache {
public:
  /// `DSV3C_CACHE_DIR`, else `$XDG_CACHE_HOME/dsv3c`, else `~/.cache/dsv3c`.
  static std::string defaultDirectory();
  explicit CompileCache(std::string dir) : dir_(std::move(dir)) {}

  std::string key(llvm::StringRef ir, llvm::StringRef options) const;
  std::string objectPath(llvm::StringRef key) const;

  /// A cached module, or nothing on a miss (a damaged entry counts as a
  /// miss and is recompiled).
  std::unique_ptr<JitModule> lookup(llvm::StringRef key) const;
  /// Records the manifest of a module `compile` wrote to objectPath(key).
  llvm::Error store(llvm::StringRef key, const JitModule &jit) const;

private:
  std::string dir_;
};

} // namespace dsv3

#endif // DSV3_RUNTIME_JIT_JITMODULE_H
