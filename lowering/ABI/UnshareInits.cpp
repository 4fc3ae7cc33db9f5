//===- UnshareInits.cpp - dsv3-unshare-inits ------------------------------===//
//
// Part of the output ABI (with dsv3-materialize-params): entry points write
// results straight into the caller's buffers through empty-tensor
// elimination, which is only sound when no two ops start from the same
// init tensor. This pass clones `tensor.empty` and `linalg.fill` of an
// empty for every destination operand beyond the first that uses them.
//
//===----------------------------------------------------------------------===//
#include "lowering/Passes.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Interfaces/DestinationStyleOpInterface.h"

#include <algorithm>

namespace dsv3 {
#define GEN_PASS_DEF_DSV3UNSHAREINITSPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;

namespace {

/// An init that is cheap to rebuild: an empty tensor or a fill of one.
bool isFreshInit(Operation *op) {
  if (isa<tensor::EmptyOp>(op))
    return true;
  auto fill = dyn_cast<linalg::FillOp>(op);
  return fill && fill.hasPureTensorSemantics() &&
         fill.getOutputs()[0].getDefiningOp<tensor::EmptyOp>();
}

struct DSV3UnshareInitsPass : dsv3::impl::DSV3UnshareInitsPassBase<DSV3UnshareInitsPass> {
  void runOnOperation() override {
    SmallVector<Operation *> inits;
    getOperation()->walk([&](Operation *op) {
      if (op->getNumResults() == 1 && isFreshInit(op))
        inits.push_back(op);
    });
    for (Operation *init : inits) {
      // Destination operands of other ops that start from this init; the
      // first in the block keeps the original (use lists run newest first,
      // so reversing them gives program order for uses built in order).
      SmallVector<OpOperand *> destinations;
      for (OpOperand &use : init->getResult(0).getUses()) {
        auto dps = dyn_cast<DestinationStyleOpInterface>(use.getOwner());
        if (dps && dps.isDpsInit(&use))
          destinations.push_back(&use);
      }
      std::reverse(destinations.begin(), destinations.end());
      for (size_t i = 1; i < destinations.size(); ++i) {
        OpOperand *use = destinations[i];
        OpBuilder b(use->getOwner());
        IRMapping map;
        if (auto fill = dyn_cast<linalg::FillOp>(init))
          b.clone(*fill.getOutputs()[0].getDefiningOp(), map);
        use->set(b.clone(*init, map)->getResult(0));
      }
    }
  }
};

} // namespace
