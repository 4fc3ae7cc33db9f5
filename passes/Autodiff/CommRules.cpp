//===- CommRules.cpp - gradient rules of the communication ops -----------===//
//
// Each collective's backward is another collective: all-reduce is its own
// adjoint, all-gather and reduce-scatter are each other's, and an
// all-to-all is undone by the reverse exchange (counts swapped). Rules
// exist for the blocking forms: differentiation runs before an overlap
// pass splits them into start/wait. Send and receive get theirs with the
// pipeline schedule.
//
//===----------------------------------------------------------------------===//
#include "passes/Autodiff/Rules.h"

using namespace mlir;

namespace dsv3 {
namespace {

LogicalResult allReduceGradient(AllReduceOp op, OpBuilder &b, GradientSweep &sweep) {
  Value g = sweep.gradient(op);
  sweep.accumulate(op.getX(), AllReduceOp::create(b, op.getLoc(), g.getType(), g,
                                                  op.getRanksAttr(), op.getGroupAttr()));
  return success();
}

LogicalResult allGatherGradient(AllGatherOp op, OpBuilder &b, GradientSweep &sweep) {
  Value g = sweep.gradient(op);
  sweep.accumulate(op.getX(), ReduceScatterOp::create(b, op.getLoc(), op.getX().getType(), g,
                                                      op.getRanksAttr(), op.getGroupAttr()));
  return success();
}

LogicalResult reduceScatterGradient(ReduceScatterOp op, OpBuilder &b, GradientSweep &sweep) {
  Value g = sweep.gradient(op);
  sweep.accumulate(op.getX(), AllGatherOp::create(b, op.getLoc(), op.getX().getType(), g,
                                                  op.getRanksAttr(), op.getGroupAttr()));
  return success();
}

/// Each row's gradient goes back to the rank the row came from: the
/// exchange with send and receive counts swapped, into `x`'s shape.
LogicalResult allToAllGradient(AllToAllOp op, OpBuilder &b, GradientSweep &sweep) {
  Value g = sweep.gradient(op);
  sweep.accumulate(op.getX(),
                   AllToAllOp::create(b, op.getLoc(), op.getX().getType(), g, op.getRecvCounts(),
                                      op.getSendCounts(), op.getRanksAttr(),
                                      op.getGroupAttr()));
  return success();
}

/// Each rank's block goes back to its place; the other ranks' blocks of
/// the gradient are theirs.
LogicalResult rankRowsGradient(RankRowsOp op, OpBuilder &b, GradientSweep &sweep) {
  Value g = sweep.gradient(op);
  sweep.accumulate(op.getX(), RankRowsGradOp::create(b, op.getLoc(), op.getX().getType(), g,
                                                     op.getRanksAttr(), op.getGroupAttr()));
  return success();
}

} // namespace

void registerCommGradientRules(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, DSV3Dialect *) {
    AllReduceOp::attachInterface<Rule<AllReduceOp, allReduceGradient>>(*ctx);
    AllGatherOp::attachInterface<Rule<AllGatherOp, allGatherGradient>>(*ctx);
    ReduceScatterOp::attachInterface<Rule<ReduceScatterOp, reduceScatterGradient>>(*ctx);
    AllToAllOp::attachInterface<Rule<AllToAllOp, allToAllGradient>>(*ctx);
    RankRowsOp::attachInterface<Rule<RankRowsOp, rankRowsGradient>>(*ctx);
  });
}

} // namespace dsv3
