//===- Pipelines.h - the named compilation pipelines ------------*- C++ -*-===//
//
// The pipeline from frontend IR to the LLVM dialect, as phases. The driver
// stops after a phase for `--emit`, and dsv3-opt registers each builder as a
// named pipeline.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_LOWERING_PIPELINE_PIPELINES_H
#define DSV3_LOWERING_PIPELINE_PIPELINES_H

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "llvm/ADT/StringRef.h"

#include <optional>

namespace dsv3 {

/// Phases in pipeline order; each names the IR it produces.
enum class Phase { DSV3, Tensor, Linalg, LLVM };
std::optional<Phase> parsePhase(llvm::StringRef name);
llvm::StringRef phaseName(Phase phase);

struct CPUPipelineOptions {
  /// Fuse elementwise linalg producers into their consumers.
  bool fuseElementwise = true;
  /// Select the runtime's hand-written kernels (attention, routed experts,
  /// FP8, the float32 GEMM); false compiles every op from its reference
  /// lowering to linalg.
  bool useUkernels = true;
};

/// Options of the whole pipeline, in dsv3-opt's textual form too:
///   dsv3-opt --dsv3-train-pipeline='fp8=true fp8-options={format=e5m2}'
/// reproduces what `dsv3c compile --mode=grad --fp8 --fp8-options=...`
/// compiles (the FP8 options are dsv3-fp8-tile-quantize's own, checked by
/// that pass).
struct DSV3PipelineOptions : public mlir::PassPipelineOptions<DSV3PipelineOptions> {
  Option<bool> differentiate{*this, "differentiate",
                             llvm::cl::desc("Reverse-mode gradient: @forward -> @forward_grad"),
                             llvm::cl::init(false)};
  Option<bool> fp8{*this, "fp8",
                   llvm::cl::desc("FP8 fine-grained tile quantization of the GEMMs"),
                   llvm::cl::init(false)};
  Option<std::string> fp8Options{
      *this, "fp8-options",
      llvm::cl::desc("Options of dsv3-fp8-tile-quantize (e.g. 'format=e5m2 gemms=fprop')"),
      llvm::cl::init("")};
  Option<bool> ukernels{*this, "ukernels",
                        llvm::cl::desc("Select the CPU runtime kernels (else every op takes its reference lowering)"),
                        llvm::cl::init(true)};
  Option<bool> fuseElementwise{*this, "fuse-elementwise",
                               llvm::cl::desc("Fuse elementwise linalg producers"),
                               llvm::cl::init(true)};
  Option<int64_t> expertParallel{
      *this, "expert-parallel",
      llvm::cl::desc("Ranks the routed experts are sharded over (dsv3-expert-parallel)"),
      llvm::cl::init(1)};
  Option<int64_t> routingNodes{
      *this, "routing-nodes",
      llvm::cl::desc("Nodes the routed experts are spread over (dsv3-node-limited-routing)"),
      llvm::cl::init(1)};
  Option<int64_t> maxNodesPerToken{
      *this, "max-nodes-per-token",
      llvm::cl::desc("Nodes a token's experts may come from (0: no limit)"),
      llvm::cl::init(0)};
  Option<int64_t> pipelineStages{
      *this, "pipeline-stages",
      llvm::cl::desc("With differentiate: the module holds @stage0..@stage<N-1> (imported "
                     "with N pipeline stages); each is differentiated and split into "
                     "F/Bi/W chunks (dsv3-pipeline-partition)"),
      llvm::cl::init(1)};
  Option<bool> commOverlap{
      *this, "comm-overlap",
      llvm::cl::desc("With expert parallelism: start each all-to-all early and wait late, "
                     "with independent compute between (dsv3-comm-overlap)"),
      llvm::cl::init(true)};
  Option<bool> fusePairs{
      *this, "fuse-pairs",
      llvm::cl::desc("With comm-overlap and a pipeline schedule: each F&B pair as one "
                     "function whose halves' exchanges overlap the other's compute"),
      llvm::cl::init(true)};
  CPUPipelineOptions cpu() const { return {fuseElementwise, ukernels}; }
};

/// Model-structure ops -> tensor-level dsv3 ops.
void buildDecomposePipeline(mlir::OpPassManager &pm);
/// The tensor phase: decomposition, then the gradient and FP8 quantization
/// when the options ask; fails through `error` on FP8 options the pass
/// rejects.
mlir::LogicalResult
buildTensorPipeline(mlir::OpPassManager &pm, const DSV3PipelineOptions &options,
                    llvm::function_ref<mlir::LogicalResult(const llvm::Twine &)> error);
/// Tensor-level dsv3 ops -> CPU kernel calls where selected, and
/// linalg/tensor/arith/math/scf on tensors for the rest.
void buildLinalgPipeline(mlir::OpPassManager &pm, const CPUPipelineOptions &options);
/// Linalg on tensors -> bufferized loops and microkernel calls -> LLVM dialect.
void buildLLVMPipeline(mlir::OpPassManager &pm,
                       const CPUPipelineOptions &options);
/// The passes of one phase (those that produce `phase`'s IR).
mlir::LogicalResult
buildPhase(mlir::OpPassManager &pm, Phase phase, const DSV3PipelineOptions &options,
           llvm::function_ref<mlir::LogicalResult(const llvm::Twine &)> error);
/// All phases up to and including `to`.
mlir::LogicalResult
buildPipeline(mlir::OpPassManager &pm, Phase to, const DSV3PipelineOptions &options,
              llvm::function_ref<mlir::LogicalResult(const llvm::Twine &)> error);

/// Registers every dialect and interface the pipeline creates or consumes
/// (bufferization models, LLVM conversion interfaces, translations).
void registerPipelineDialects(mlir::DialectRegistry &registry);

/// Registers for dsv3-opt: `dsv3-decompose-pipeline`, and with
/// DSV3PipelineOptions `dsv3-to-linalg-pipeline`, `dsv3-to-llvm-pipeline`
/// (alias `dsv3-eval-pipeline`) and `dsv3-train-pipeline` (the same with
/// differentiate=true), each ending in the LLVM dialect except the first two.
void registerPipelines();

} // namespace dsv3

#endif // DSV3_LOWERING_PIPELINE_PIPELINES_H
