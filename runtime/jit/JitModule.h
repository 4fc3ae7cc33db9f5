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

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <memory>
#include <string>
#include <vector>

namespace dsv3 {

/// Where one parameter lives in the flat float32 parameter buffer.
struct ParamSlot {
  std::string name; // hub name; a '*' marks a stack over experts
  int64_t offset = 0;
  std::vector<int64_t> shape;
  int64_t numElements() const;
};

/// Layout recorded by dsv3-materialize-params on the module.
struct ParamLayout {
  std::vector<ParamSlot> slots;
  int64_t totalElements = 0;
};

/// A host buffer handed to or filled by JIT code.
struct BufferArg {
  void *data;
  std::vector<int64_t> shape; // row-major, contiguous
};

/// Signature of one entry point: output names in order.
struct EntryPoint {
  std::string name;
  std::vector<std::string> outputs;
  /// The packed C-interface wrapper: one pointer per argument.
  void (*packed)(void **) = nullptr;
};

/// Host buffers for every output of an entry point: int64 for the chosen
/// expert ids (`topk_ids.*`), float32 for everything else.
struct OutputBuffers {
  OutputBuffers(const EntryPoint &entry,
                const std::vector<std::vector<int64_t>> &shapes);
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<int64_t>> ints;
  std::vector<BufferArg> args;
};

class JitModule {
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
  load(llvm::StringRef objectPath, ParamLayout layout,
       std::vector<EntryPoint> entries);

  const std::vector<EntryPoint> &entries() const { return entries_; }

  const ParamLayout &layout() const { return layout_; }
  const EntryPoint *entry(llvm::StringRef name) const;

  /// Calls `name(params, inputs..., outputs...)`.
  llvm::Error call(llvm::StringRef name, float *params,
                   llvm::ArrayRef<BufferArg> inputs,
                   llvm::ArrayRef<BufferArg> outputs);

private:
  std::unique_ptr<mlir::ExecutionEngine> engine_;
  std::unique_ptr<llvm::orc::LLJIT> linked_; // when loaded from an object
  ParamLayout layout_;
  std::vector<EntryPoint> entries_;
};

/// Reads `dsv3.param_layout` / `dsv3.param_count` from a module.
llvm::Expected<ParamLayout> readParamLayout(mlir::ModuleOp module);

/// On-disk cache of compiled modules: `<dir>/<key>.o` holds the machine
/// code and `<dir>/<key>.json` what is needed to call it (parameter layout,
/// entry points, and the caller's own `extra` data). The key hashes the
/// input IR, the options that shape the code, this compiler's build and the
/// host CPU, so a stale or foreign entry is never used.
class CompileCache {
public:
  /// `DSV3C_CACHE_DIR`, else `$XDG_CACHE_HOME/dsv3c`, else `~/.cache/dsv3c`.
  static std::string defaultDirectory();
  explicit CompileCache(std::string dir) : dir_(std::move(dir)) {}

  std::string key(llvm::StringRef ir, llvm::StringRef options) const;
  std::string objectPath(llvm::StringRef key) const;

  /// A cached module and its `extra` data, or nothing on a miss (a damaged
  /// entry counts as a miss and is recompiled).
  std::unique_ptr<JitModule> lookup(llvm::StringRef key, llvm::json::Value &extra) const;
  /// Records the manifest of a module `compile` wrote to objectPath(key).
  llvm::Error store(llvm::StringRef key, const JitModule &jit,
                    llvm::json::Value extra) const;

private:
  std::string dir_;
};

} // namespace dsv3

#endif // DSV3_RUNTIME_JIT_JITMODULE_H
