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
  /// Call the runtime GEMM microkernel for tagged GEMMs instead of loops.
  bool useUkernels = true;
};

/// Model-structure ops -> tensor-level dsv3 ops.
void buildDecomposePipeline(mlir::OpPassManager &pm);
/// Tensor-level dsv3 ops -> linalg/tensor/arith/math/scf on tensors.
void buildLinalgPipeline(mlir::OpPassManager &pm);
/// Linalg on tensors -> bufferized loops and microkernel calls -> LLVM dialect.
void buildLLVMPipeline(mlir::OpPassManager &pm,
                       const CPUPipelineOptions &options);
/// All phases after `from` up to and including `to`.
void buildPipeline(mlir::OpPassManager &pm, Phase to,
                   const CPUPipelineOptions &options = {});

/// Registers every dialect and interface the pipeline creates or consumes
/// (bufferization models, LLVM conversion interfaces, translations).
void registerPipelineDialects(mlir::DialectRegistry &registry);

/// Registers `dsv3-decompose-pipeline`, `dsv3-to-linalg-pipeline` and
/// `dsv3-to-llvm-pipeline` for dsv3-opt.
void registerPipelines();

} // namespace dsv3

#endif // DSV3_LOWERING_PIPELINE_PIPELINES_H
