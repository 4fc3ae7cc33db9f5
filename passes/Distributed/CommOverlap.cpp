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
// backward, the weight gradients do.
//
// With a `dsv3.pipeline_schedule`, each F&B pair it lists (a forward of one
// micro-batch beside the backward of another) also becomes one function,
// `@<forward>_and_<backward>`, whose two halves take turns: the backward
// runs up to and including its next rows exchange's start, then the
// forward up to its next start, and so on, so each exchange of one
// micro-batch travels while the other micro-batch computes. For a MoE layer
// that is DeepSeek-V3's order: combine(B) in flight during attention(F);
// dispatch(F) and then dispatch(B) started; MLP(B) and the weight
// gradients between; MLP(F); combine(F) in flight during attention(B). The
// pair records the function in its `fused` attribute.
//
// dsv3-lower-comm turns the start and wait into the runtime's nonblocking
// all-to-all. Runs on tensor-level IR after dsv3-expert-parallel and
// dsv3-autodiff (and dsv3-pipeline-partition).
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
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

/// Whether `op` starts an exchange of float rows (the exchanges a fused pair
/// alternates on; integer count exchanges are small and sized by the rows
/// that follow them).
bool startsRows(Operation &op) {
  auto start = dyn_cast<AllToAllStartOp>(op);
  return start &&
         isa<FloatType>(cast<RankedTensorType>(start.getX().getType()).getElementType());
}

/// `attrs` with the string attribute `key` prefixed by `prefix`.
DictionaryAttr prefixName(DictionaryAttr attrs, StringRef key, StringRef prefix) {
  if (!attrs)
    return attrs;
  NamedAttrList list(attrs);
  if (auto name = list.getNamed(key))
    if (auto str = dyn_cast<StringAttr>(name->getValue()))
      list.set(key, StringAttr::get(attrs.getContext(), prefix + str.getValue()));
  return list.getDictionary(attrs.getContext());
}

/// Builds `name` from the chunks `forward` and `backward` of two
/// micro-batches: arguments and results are both chunks' (forward first),
/// named `forward.<name>` and `backward.<name>`; the bodies are cloned in
/// turns that end at a rows exchange's start, the backward first.
func::FuncOp fusePair(func::FuncOp forward, func::FuncOp backward, StringRef name) {
  MLIRContext *ctx = forward.getContext();
  OpBuilder b(ctx);
  b.setInsertionPointAfter(backward);
  SmallVector<Type> inputs, results;
  SmallVector<Attribute> argAttrs, resultAttrs;
  for (auto [fn, prefix] : {std::pair{forward, "forward."}, std::pair{backward, "backward."}}) {
    llvm::append_range(inputs, fn.getArgumentTypes());
    llvm::append_range(results, fn.getResultTypes());
    for (unsigned i = 0; i < fn.getNumArguments(); ++i)
      argAttrs.push_back(prefixName(fn.getArgAttrDict(i), DSV3Dialect::kInputName, prefix));
    for (unsigned i = 0; i < fn.getNumResults(); ++i)
      resultAttrs.push_back(
          prefixName(fn.getResultAttrDict(i), DSV3Dialect::kOutputName, prefix));
  }
  auto fused = func::FuncOp::create(b, forward.getLoc(), name,
                                    FunctionType::get(ctx, inputs, results));
  auto dicts = [&](ArrayRef<Attribute> attrs) {
    SmallVector<DictionaryAttr> out;
    for (Attribute a : attrs)
      out.push_back(a ? cast<DictionaryAttr>(a) : DictionaryAttr::get(ctx));
    return out;
  };
  fused.setAllArgAttrs(dicts(argAttrs));
  fused.setAllResultAttrs(dicts(resultAttrs));
  Block *body = fused.addEntryBlock();
  OpBuilder ob = OpBuilder::atBlockBegin(body);

  // Stream 0 is the backward, stream 1 the forward.
  func::FuncOp chunks[2] = {backward, forward};
  unsigned firstArg[2] = {forward.getNumArguments(), 0};
  IRMapping map[2];
  SmallVector<Operation *> ops[2];
  for (int s = 0; s < 2; ++s) {
    Block &src = chunks[s].getBody().front();
    for (BlockArgument a : src.getArguments())
      map[s].map(a, body->getArgument(firstArg[s] + a.getArgNumber()));
    for (Operation &op : src.without_terminator())
      ops[s].push_back(&op);
  }
  size_t next[2] = {0, 0};
  for (int turn = 0; next[0] < ops[0].size() || next[1] < ops[1].size(); turn ^= 1) {
    int s = next[turn] < ops[turn].size() ? turn : turn ^ 1;
    while (next[s] < ops[s].size()) {
      Operation *op = ops[s][next[s]++];
      ob.clone(*op, map[s]);
      if (startsRows(*op))
        break;
    }
  }
  SmallVector<Value> returned;
  for (int s : {1, 0})
    for (Value v : chunks[s].getBody().front().getTerminator()->getOperands())
      returned.push_back(map[s].lookupOrDefault(v));
  func::ReturnOp::create(ob, forward.getLoc(), returned);
  return fused;
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
    if (fusePairs && failed(fuseScheduledPairs()))
      signalPassFailure();
  }

  /// One function per distinct F&B pair of the module's schedule.
  LogicalResult fuseScheduledPairs() {
    ModuleOp module = getOperation();
    for (auto schedule : module.getOps<PipelineScheduleOp>()) {
      WalkResult walk = schedule.walk([&](PipelineRunPairOp pair) {
        std::string f = "stage" + std::to_string(pair.getForwardStage()) + "_forward";
        std::string bw = "stage" + std::to_string(pair.getBackwardStage()) + "_backward";
        std::string name = f + "_and_" + bw;
        if (!module.lookupSymbol<func::FuncOp>(name)) {
          auto forward = module.lookupSymbol<func::FuncOp>(f);
          auto backward = module.lookupSymbol<func::FuncOp>(bw);
          if (!forward || !backward) {
            pair.emitOpError() << "pairs @" << f << " and @" << bw
                               << ", which dsv3-pipeline-partition did not build";
            return WalkResult::interrupt();
          }
          fusePair(forward, backward, name);
        }
        pair.setFusedAttr(FlatSymbolRefAttr::get(&getContext(), name));
        return WalkResult::advance();
      });
      if (walk.wasInterrupted())
        return failure();
    }
    return success();
  }
};

} // namespace
