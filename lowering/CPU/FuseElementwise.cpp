//===- FuseElementwise.cpp - dsv3-fuse-elementwise ------------------------===//
//
// Tensor-level clean-up before bufferization: upstream elementwise fusion,
// restricted so that producers are only fused where the consumer reads each
// of their elements once (never into GEMMs, which would recompute them).
//
//===----------------------------------------------------------------------===//
#include "lowering/CPU/Ukernels.h"
#include "lowering/Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3FUSEELEMENTWISEPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;

namespace {
struct DSV3FuseElementwisePass
    : dsv3::impl::DSV3FuseElementwisePassBase<DSV3FuseElementwisePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    linalg::populateElementwiseOpsFusionPatterns(
        patterns, [](OpOperand *operand) {
          auto consumer = dyn_cast<linalg::LinalgOp>(operand->getOwner());
          if (!consumer || dsv3::lowering::isMatmulNTF32(consumer))
            return false;
          AffineMap m = consumer.getMatchingIndexingMap(operand);
          return m.isPermutation();
        });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
