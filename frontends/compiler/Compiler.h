//===- Compiler.h - model description -> compiled module ---------*- C++ -*-===//
//
// The compiler as a library: what `dsv3c` (a shell of flags), tests, a
// launcher or a server call. A model description is imported into the dsv3
// dialect for one batch shape and a mode, lowered through the named
// pipelines (lowering/Pipeline), and either JIT-compiled in this process
// (through the compile cache) or written as an ahead-of-time artifact: a
// shared object and its ABI manifest, which the runtime core runs without
// LLVM (tools/dsv3-run).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_COMPILER_COMPILER_H
#define DSV3_FRONTENDS_COMPILER_COMPILER_H

#include "frontends/import/ModelImporter.h"
#include "frontends/model/ModelDescription.h"
#include "lowering/Pipeline/Pipelines.h"
#include "runtime/exec/Session.h"
#include "runtime/jit/JitModule.h"
#include "runtime/pipeline/Schedule.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Support/Timing.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dsv3 {

/// What a compiled module computes.
enum class CompileMode {
  Eval,      ///< @forward: logits, losses, chosen experts
  Grad,      ///< @forward_grad: losses and d total_loss / d parameter
  TrainStep, ///< @forward_grad and @adamw_step over the same parameters
  Generate,  ///< @prefill, @decode over a latent cache (and MTP's draft steps)
};
llvm::StringRef modeName(CompileMode mode);
std::optional<CompileMode> parseMode(llvm::StringRef name);

struct CompileOptions {
  CompileMode mode = CompileMode::Eval;
  int64_t batch = 2, seqLen = 32;
  bool packed = false;          ///< rows carry segment_ids (packed documents)
  double mtpWeight = 0.3;       ///< objective of Grad/TrainStep
  double balanceAlpha = 0;      ///< sequence-wise balance loss weight
  /// dsv3-fp8-tile-quantize options (its ODS-declared text form); nullopt
  /// keeps every GEMM in float32.
  std::optional<std::string> fp8;
  CPUPipelineOptions cpu;       ///< microkernels on or off
  unsigned optLevel = 3;        ///< LLVM optimisation level
  bool bf16Moments = false;     ///< TrainStep: AdamW moments stored as BF16
  /// Ranks of the expert-parallel group the routed experts are sharded
  /// over (1: every expert here). The batch is one replica's.
  int64_t expertParallel = 1;
  /// Node-limited routing: the experts spread over `routingNodes` nodes, a
  /// token's from at most `maxNodesPerToken` of them (0: no limit).
  int64_t routingNodes = 1, maxNodesPerToken = 0;
  /// Grad/TrainStep: pipeline stages (1: one @forward_grad). With more,
  /// the module has F, Bi, W and B chunks per stage
  /// (dsv3-pipeline-partition).
  int64_t pipelineStages = 1;
  /// With pipeline stages: every rank's program, added to the module as a
  /// `dsv3.pipeline_schedule` (F&B pairs fused by dsv3-comm-overlap).
  std::optional<rt::PipelineSchedule> schedule;
  /// With expert parallelism: compute between each all-to-all's start and
  /// wait (dsv3-comm-overlap); off, every exchange blocks where it stands.
  bool commOverlap = true;
  /// With commOverlap and a schedule: fuse each F&B pair into one function
  /// whose halves' exchanges overlap the other's compute.
  bool fusePairs = true;
  /// Generate: the entry points' shapes (batch and seqLen are not used).
  GenerateShape generate;
  std::string dumpDir;          ///< one numbered file per phase when set
  /// The file the batch shape came from (the tokens), named in shape
  /// errors; the description's path when empty.
  std::string shapeSource;
};

/// A module compiled in this process.
struct CompiledModule {
  std::unique_ptr<JitModule> executable;
  std::string entry;        ///< "forward" or "forward_grad"
};

/// A model compiled in this process and a session holding its weights
/// (and, for TrainStep, its compiled AdamW step and moments).
struct LoadedModel {
  CompiledModule module;
  std::unique_ptr<JitModule> optimizer;
  std::unique_ptr<rt::Session> session;
};

class Compiler {
public:
  Compiler();
  ~Compiler();

  mlir::MLIRContext &context() { return *ctx; }
  /// The root of the per-phase timing report (--mlir-timing).
  mlir::TimingScope &timing() { return *rootTiming; }

  /// The dsv3-level module of `desc` for the options' shape and objective.
  llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
  import(const ModelDescription &desc, const CompileOptions &options);

  /// Runs the pipeline phases after `from` up to `to` (differentiating for
  /// Grad/TrainStep in the tensor phase, then FP8 when asked), one pass
  /// manager per phase so that the dump directory gets each phase.
  llvm::Error lower(mlir::ModuleOp module, Phase to, const CompileOptions &options,
                    Phase from = Phase::DSV3);

  /// Imports, lowers and JIT-compiles, through the compile cache in
  /// `cacheDir` when it is not empty. `onLayout` runs once the parameter
  /// layout is known and before machine code is generated (e.g. to load
  /// the weights, so that a bad checkpoint fails before the long part).
  llvm::Expected<CompiledModule>
  compile(const ModelDescription &desc, const CompileOptions &options,
          const std::string &cacheDir = "",
          const std::function<llvm::Error(const rt::ParamLayout &)> &onLayout = {});

  /// compile() with the description's weights (its checkpoint, or seeded
  /// values for [init] seed = N) loaded into a session as soon as the
  /// parameter layout is known, so that a bad checkpoint fails before code
  /// generation. TrainStep also compiles the AdamW step for the session.
  /// Under expert parallelism (options.expertParallel > 1) the session
  /// holds expert-parallel rank `expertRank`'s block of every expert stack;
  /// under ZeRO-1 its AdamW step and moments cover `shard` only.
  llvm::Expected<LoadedModel> load(const ModelDescription &desc, const CompileOptions &options,
                                   const std::string &cacheDir = "", int64_t expertRank = 0,
                                   rt::OptimizerShard shard = {});

  /// Writes an ahead-of-time artifact into `dir` (created): `model.so`,
  /// machine code for this host CPU exporting `_dsv3_packed_<entry>` for
  /// each entry point (TrainStep: forward_grad and adamw_step), and
  /// `manifest.json` (rt::Manifest: layout and typed entry points; its
  /// extra data holds the mode, the training recipe and the hub
  /// config.json).
  llvm::Error writeArtifact(const ModelDescription &desc, const CompileOptions &options,
                            const std::string &dir);

  /// The compiled AdamW update over `numElements` parameters.
  llvm::Expected<std::unique_ptr<JitModule>> compileAdamW(int64_t numElements,
                                                          const CompileOptions &options);

private:
  /// The AdamW update over `numElements` parameters, lowered to the LLVM
  /// dialect (for the JIT and for train-step artifacts).
  llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>> lowerAdamW(int64_t numElements,
                                                               bool bf16Moments);

  mlir::DialectRegistry registry;
  std::unique_ptr<mlir::MLIRContext> ctx;
  mlir::DefaultTimingManager timingManager;
  std::optional<mlir::TimingScope> rootTiming;
};

/// Translates an LLVM-dialect module to LLVM IR text.
llvm::Error printLLVMIR(mlir::ModuleOp module, llvm::raw_ostream &os);

} // namespace dsv3

#endif // DSV3_FRONTENDS_COMPILER_COMPILER_H
