//===- Pipelines.cpp - the named compilation pipelines --------------------===//
//
// dsv3 (model) --dsv3-decompose--> dsv3 (tensor ops)
//   --convert-dsv3-to-linalg--> linalg on tensors
//   --materialize params, fuse, bufferize, ukernels, loops--> LLVM dialect
//
//===----------------------------------------------------------------------===//
#include "lowering/Pipeline/Pipelines.h"

#include "lowering/CPU/Ukernels.h"
#include "lowering/Passes.h"
#include "passes/Passes.h"

#include "ir/Codegen/CodegenDialect.h"
#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/SCF/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Tensor/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

namespace dsv3 {

std::optional<Phase> parsePhase(llvm::StringRef name) {
  return llvm::StringSwitch<std::optional<Phase>>(name)
      .Case("dsv3", Phase::DSV3)
      .Case("tensor", Phase::Tensor)
      .Case("linalg", Phase::Linalg)
      .Case("llvm", Phase::LLVM)
      .Default(std::nullopt);
}

llvm::StringRef phaseName(Phase phase) {
  switch (phase) {
  case Phase::DSV3:
    return "dsv3";
  case Phase::Tensor:
    return "tensor";
  case Phase::Linalg:
    return "linalg";
  case Phase::LLVM:
    return "llvm";
  }
  llvm_unreachable("unknown phase");
}

void registerPipelineDialects(DialectRegistry &registry) {
  registry.insert<DSV3Dialect, codegen::CodegenDialect, func::FuncDialect, arith::ArithDialect,
                  math::MathDialect, tensor::TensorDialect,
                  linalg::LinalgDialect, scf::SCFDialect, memref::MemRefDialect,
                  bufferization::BufferizationDialect, affine::AffineDialect,
                  cf::ControlFlowDialect, LLVM::LLVMDialect>();
  arith::registerBufferizableOpInterfaceExternalModels(registry);
  linalg::registerBufferizableOpInterfaceExternalModels(registry);
  scf::registerBufferizableOpInterfaceExternalModels(registry);
  tensor::registerBufferizableOpInterfaceExternalModels(registry);
  lowering::registerUkernelBufferization(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
}

void buildDecomposePipeline(OpPassManager &pm) {
  pm.addPass(createDSV3DecomposePass());
}

void buildLinalgPipeline(OpPassManager &pm, const CPUPipelineOptions &options) {
  // Common subexpressions are merged on dsv3 ops (e.g. the final norm used by
  // the head and by MTP), and again on the linalg form. Merged zero-filled
  // destinations are safe because every runtime kernel overwrites its
  // outputs entirely (tests/lit/lowering/ukernel-bufferization.mlir shows
  // why a kernel that did not would read an uninitialised buffer).
  pm.addPass(createCSEPass());
  // Communication becomes runtime calls on every target.
  pm.addPass(createDSV3LowerCommPass());
  // The target picks its kernels on dsv3 ops; the rest takes the reference
  // lowering.
  if (options.useUkernels)
    pm.addPass(createDSV3CPUSelectUkernelsPass());
  pm.addPass(createConvertDSV3ToLinalgPass());
  // Residual adds are arith ops on tensors until here.
  pm.addNestedPass<func::FuncOp>(createConvertElementwiseToLinalgPass());
  pm.addPass(createCSEPass());
}

void buildLLVMPipeline(OpPassManager &pm, const CPUPipelineOptions &options) {
  pm.addPass(createDSV3MaterializeParamsPass());
  if (options.fuseElementwise)
    pm.addNestedPass<func::FuncOp>(createDSV3FuseElementwisePass());
  pm.addPass(createCanonicalizerPass());
  // Let the last op of each output write straight into the caller's buffer
  // (sound only when no two ops share an init).
  pm.addNestedPass<func::FuncOp>(createDSV3UnshareInitsPass());
  pm.addPass(bufferization::createEmptyTensorEliminationPass());
  pm.addPass(bufferization::createOneShotBufferizePass());
  bufferization::buildBufferDeallocationPipeline(pm);
  pm.addPass(createDSV3CPULowerUkernelsPass(
      DSV3CPULowerUkernelsPassOptions{/*gemm=*/options.useUkernels}));
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  pm.addPass(createDSV3OutlineLoopNestsPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createConvertMathToLibmPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  pm.addPass(createCanonicalizerPass());
}

LogicalResult buildTensorPipeline(OpPassManager &pm, const DSV3PipelineOptions &options,
                                  llvm::function_ref<LogicalResult(const llvm::Twine &)> error) {
  buildDecomposePipeline(pm);
  if (options.maxNodesPerToken > 0)
    pm.addPass(createDSV3NodeLimitedRoutingPass(DSV3NodeLimitedRoutingPassOptions{
        /*nodes=*/options.routingNodes, /*maxNodes=*/options.maxNodesPerToken}));
  if (options.expertParallel > 1)
    pm.addPass(createDSV3ExpertParallelPass(
        DSV3ExpertParallelPassOptions{/*ranks=*/options.expertParallel}));
  if (options.differentiate && options.pipelineStages > 1) {
    for (int64_t k = 0; k < options.pipelineStages; ++k) {
      DSV3AutodiffPassOptions stage;
      stage.function = "stage" + std::to_string(k);
      pm.addPass(createDSV3AutodiffPass(stage));
    }
    pm.addPass(createDSV3PipelinePartitionPass());
  } else if (options.differentiate) {
    pm.addPass(createDSV3AutodiffPass());
  }
  if (options.expertParallel > 1 && options.commOverlap)
    pm.addPass(createDSV3CommOverlapPass(DSV3CommOverlapPassOptions{options.fusePairs}));
  if (options.fp8) {
    std::unique_ptr<Pass> fp8 = createDSV3FP8TileQuantizePass();
    std::string problem;
    if (failed(fp8->initializeOptions(options.fp8Options, [&](const llvm::Twine &msg) {
          problem = msg.str();
          return failure();
        })))
      return error("FP8 options '" + options.fp8Options + "': " + problem);
    pm.addNestedPass<func::FuncOp>(std::move(fp8));
  }
  return success();
}

LogicalResult buildPhase(OpPassManager &pm, Phase phase, const DSV3PipelineOptions &options,
                         llvm::function_ref<LogicalResult(const llvm::Twine &)> error) {
  switch (phase) {
  case Phase::DSV3:
    return success();
  case Phase::Tensor:
    return buildTensorPipeline(pm, options, error);
  case Phase::Linalg:
    buildLinalgPipeline(pm, options.cpu());
    return success();
  case Phase::LLVM:
    buildLLVMPipeline(pm, options.cpu());
    return success();
  }
  llvm_unreachable("unknown phase");
}

LogicalResult buildPipeline(OpPassManager &pm, Phase to, const DSV3PipelineOptions &options,
                            llvm::function_ref<LogicalResult(const llvm::Twine &)> error) {
  for (Phase phase : {Phase::Tensor, Phase::Linalg, Phase::LLVM})
    if (phase <= to && failed(buildPhase(pm, phase, options, error)))
      return failure();
  return success();
}

namespace {

/// A pipeline registration whose options are DSV3PipelineOptions and whose
/// builder may fail (bad FP8 options) with a diagnostic.
void registerWithOptions(llvm::StringRef name, llvm::StringRef description, Phase to,
                         bool differentiate) {
  registerPassPipeline(
      name, description,
      [=](OpPassManager &pm, llvm::StringRef text,
          llvm::function_ref<LogicalResult(const llvm::Twine &)> error) {
        auto options = DSV3PipelineOptions::createFromString(text);
        if (!options)
          return error("invalid options '" + text + "'");
        if (differentiate)
          options->differentiate = true;
        return buildPipeline(pm, to, *options, error);
      },
      [](llvm::function_ref<void(const mlir::detail::PassOptions &)> printer) {
        printer(DSV3PipelineOptions());
      });
}

} // namespace

void registerPipelines() {
  PassPipelineRegistration<>("dsv3-decompose-pipeline",
                             "dsv3 model ops to tensor-level dsv3 ops",
                             buildDecomposePipeline);
  registerWithOptions("dsv3-to-linalg-pipeline", "dsv3 model ops to linalg on tensors",
                      Phase::Linalg, false);
  registerWithOptions("dsv3-to-llvm-pipeline", "dsv3 model ops to the LLVM dialect",
                      Phase::LLVM, false);
  registerWithOptions("dsv3-eval-pipeline",
                      "what dsv3c compiles for eval: dsv3 model ops to the LLVM dialect",
                      Phase::LLVM, false);
  registerWithOptions("dsv3-train-pipeline",
                      "what dsv3c compiles for grad and train: the model, its gradient "
                      "(@forward_grad) and FP8 when asked, to the LLVM dialect",
                      Phase::LLVM, true);
}

} // namespace dsv3
