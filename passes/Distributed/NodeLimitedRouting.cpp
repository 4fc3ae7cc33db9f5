//===- NodeLimitedRouting.cpp - dsv3-node-limited-routing -----------------===//
//
// Marks every router with the plan's node limit: the expert-parallel
// ranks of a node hold consecutive experts, so a node is a consecutive
// block of E / nodes experts, and a token may use at most max-nodes of
// them (DeepSeek-V3: 4 of 8). The rule itself is the router's
// (dsv3.moe_router: node scores, kept nodes, then groups and experts
// among them); the op's verifier checks that it fits the model's groups
// and top_k. Part of the distributed passes: it only reads the plan.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "passes/Passes.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3NODELIMITEDROUTINGPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

struct DSV3NodeLimitedRoutingPass
    : dsv3::impl::DSV3NodeLimitedRoutingPassBase<DSV3NodeLimitedRoutingPass> {
  using Base::Base;
  void runOnOperation() override {
    if (nodes < 1 || maxNodes < 0) {
      getOperation()->emitError() << "dsv3-node-limited-routing: nodes must be positive and "
                                     "max-nodes not negative, got "
                                  << nodes << " and " << maxNodes;
      return signalPassFailure();
    }
    if (maxNodes == 0 || maxNodes >= nodes)
      return;
    Builder b(&getContext());
    bool failedAny = false;
    getOperation()->walk([&](MoERouterOp router) {
      router.setNodesAttr(b.getI64IntegerAttr(nodes));
      router.setMaxNodesAttr(b.getI64IntegerAttr(maxNodes));
      // A limit the model cannot meet is the plan's error, named here.
      if (failed(router.verify()))
        failedAny = true;
    });
    if (failedAny)
      signalPassFailure();
  }
};

} // namespace
