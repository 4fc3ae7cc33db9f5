//===- CommOverlap.cpp - dsv3-comm-overlap --------------------------------===//
//
// Puts compute between the start and the completion of every expert
// all-to-all, so the rows travel while the rank computes:
//   1. each `dsv3.all_to_all` becomes `dsv3.all_to_all_start` +
//      `dsv3.wait`;
//   2. each start moves up to right after what it needs (its operands'
//      producers), over side-effect-free ops only;
//   3. every side-effect-free op after a wait that does not depend on the
//      wait's value (directly or through other ops) moves above the wait,
//      so the wait sits right before the first op that needs the rows.
//      Waits are visited in program order, so the first exchange that can
//      hide an op gets it; an exchange of integer counts (tiny, ahead of
//      the rows it sizes) takes nothing, leaving the compute to the rows.
// Ops with effects (the other collectives, starts, waits) never move
// against each other, so every rank still issues its collectives in one
// order fixed at compile time (all ranks compile the same IR). In a forward
// chunk the shared expert computes during the dispatch and combine; in a
// backward, the weight gradients do. dsv3-lower-comm turns the start and
// wait into the runtime's nonblocking all-to-all. Runs on tensor-level IR
// after dsv3-expert-parallel and dsv3-autodiff (and dsv3-pipeline-partition).
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/SmallPtrSet.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3COMMOVERLAPPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

/// Whether `op` may move against other ops: no effects, and not a
/// communication op (those order the ranks' collectives).
bool movable(Operation *op) {
  return !op->hasTrait<OpTrait::IsTerminator>() && isMemoryEffectFree(op) &&
         !isa<RequestType>(op->getNumResults() ? op->getResult(0).getType() : Type());
}

/// Whether `op` (or an op nested in it) reads a value of `values`.
bool reads(Operation *op, const llvm::SmallPtrSetImpl<Value> &values) {
  bool found = false;
  op->walk([&](Operation *inner) {
    for (Value v : inner->getOperands())
      if (values.contains(v)) {
        found = true;
        return WalkResult::interrupt();
      }
    return WalkResult::advance();
  });
  return found;
}

/// Moves `start` up to right after the last producer of its operands in
/// its block, passing side-effect-free ops only.
void hoistStart(Operation *start) {
  Operation *before = start;
  for (Operation *prev = start->getPrevNode(); prev; prev = prev->getPrevNode()) {
    bool producer = llvm::any_of(prev->getResults(), [&](Value r) {
      return llvm::is_contained(start->getOperands(), r);
    });
    if (producer || !movable(prev))
      break;
    before = prev;
  }
  if (before != start)
    start->moveBefore(before);
}

/// Moves every side-effect-free op after `wait` that does not depend on its
/// value above it. Returns how many moved.
unsigned sinkWait(WaitOp wait) {
  llvm::SmallPtrSet<Value, 32> dependent;
  for (Value r : wait->getResults())
    dependent.insert(r);
  unsigned moved = 0;
  for (Operation *op = wait->getNextNode(); op;) {
    Operation *next = op->getNextNode();
    if (op->hasTrait<OpTrait::IsTerminator>())
      break;
    if (!movable(op) || reads(op, dependent)) {
      for (Value r : op->getResults())
        dependent.insert(r);
    } else {
      op->moveBefore(wait);
      ++moved;
    }
    op = next;
  }
  return moved;
}

struct DSV3CommOverlapPass : dsv3::impl::DSV3CommOverlapPassBase<DSV3CommOverlapPass> {
  using Base::Base;
  void runOnOperation() override {
    SmallVector<AllToAllOp> exchanges;
    getOperation().walk([&](AllToAllOp op) { exchanges.push_back(op); });
    SmallVector<Operation *> starts;
    SmallVector<WaitOp> waits;
    for (AllToAllOp op : exchanges) {
      OpBuilder b(op);
      auto start = AllToAllStartOp::create(
          b, op.getLoc(), RequestType::get(op.getContext(), op.getType()), op.getX(),
          op.getSendCounts(), op.getRecvCounts(), op.getRanksAttr(), op.getGroupAttr());
      auto wait = WaitOp::create(b, op.getLoc(), TypeRange{op.getType()}, start.getResult());
      op.getResult().replaceAllUsesWith(wait.getResult()[0]);
      op.erase();
      starts.push_back(start);
      waits.push_back(wait);
    }
    for (Operation *start : starts)
      hoistStart(start);
    // In program order: what moves above one wait is before the next.
    for (WaitOp wait : waits) {
      auto rows = cast<RankedTensorType>(wait.getResult()[0].getType());
      unsigned moved = isa<FloatType>(rows.getElementType()) ? sinkWait(wait) : 0;
      wait->setAttr("overlapped_ops",
                    IntegerAttr::get(IntegerType::get(&getContext(), 64), moved));
    }
  }
};

} // namespace
