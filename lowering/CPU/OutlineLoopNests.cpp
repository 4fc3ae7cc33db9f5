//===- OutlineLoopNests.cpp - dsv3-outline-loop-nests ---------------------===//
//
// Runs after convert-linalg-to-loops: every top-level loop nest of an entry
// point moves into its own private, non-inlinable function so that LLVM
// compiles many small functions instead of one huge one.
//
//===----------------------------------------------------------------------===//
#include "lowering/Passes.h"

#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/PatternMatch.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3OUTLINELOOPNESTSPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;

namespace {
struct DSV3OutlineLoopNestsPass
    : dsv3::impl::DSV3OutlineLoopNestsPassBase<DSV3OutlineLoopNestsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    IRRewriter rewriter(&getContext());
    SmallVector<func::FuncOp> entries;
    for (auto f : module.getOps<func::FuncOp>())
      if (!f.isExternal() && f->hasAttr("dsv3.outputs"))
        entries.push_back(f);
    for (func::FuncOp f : entries) {
      SmallVector<scf::ForOp> nests;
      for (Operation &op : f.getBody().front())
        if (auto loop = dyn_cast<scf::ForOp>(op))
          nests.push_back(loop);
      for (auto [i, loop] : llvm::enumerate(nests)) {
        Location loc = loop.getLoc();
        // Wrap the nest in a region, then outline that region.
        rewriter.setInsertionPoint(loop);
        auto wrapper =
            scf::ExecuteRegionOp::create(rewriter, loc, loop.getResultTypes());
        Block *block = rewriter.createBlock(&wrapper.getRegion());
        rewriter.replaceAllUsesWith(loop.getResults(), wrapper.getResults());
        rewriter.moveOpBefore(loop, block, block->end());
        rewriter.setInsertionPointToEnd(block);
        scf::YieldOp::create(rewriter, loc, loop.getResults());
        std::string name = f.getName().str() + "_nest" + std::to_string(i);
        FailureOr<func::FuncOp> outlined = outlineSingleBlockRegion(
            rewriter, loc, wrapper.getRegion(), name);
        if (failed(outlined)) {
          loop.emitOpError() << "could not be outlined";
          return signalPassFailure();
        }
        // Kept public (not inlined, not exported by name anywhere) so the
        // JIT can name each nest in a perf map.
        (*outlined)->setAttr("passthrough",
                             rewriter.getArrayAttr({rewriter.getStringAttr("noinline")}));
        // Put the single-block wrapper's body back in place.
        Block &body = wrapper.getRegion().front();
        Operation *yield = body.getTerminator();
        rewriter.replaceAllUsesWith(wrapper.getResults(), yield->getOperands());
        rewriter.eraseOp(yield);
        rewriter.inlineBlockBefore(&body, wrapper);
        rewriter.eraseOp(wrapper);
      }
    }
  }
};
} // namespace
