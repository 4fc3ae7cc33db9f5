//===- dsv3-opt.cpp - MlirOptMain with the dsv3 dialect and passes --------===//
//
// The lit-test driver: parses dsv3 (and the upstream dialects the pipeline
// produces) and runs any project pass or named pipeline.
//
//===----------------------------------------------------------------------===//
#include "lowering/Passes.h"
#include "lowering/Pipeline/Pipelines.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  dsv3::registerPipelineDialects(registry);
  dsv3::registerDSV3Passes();
  dsv3::registerDSV3LoweringPasses();
  dsv3::registerPipelines();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  // For lit tests of the steps around bufferization.
  mlir::bufferization::registerOneShotBufferizePass();
  mlir::bufferization::registerEmptyTensorEliminationPass();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "dsv3 optimizer driver\n", registry));
}
