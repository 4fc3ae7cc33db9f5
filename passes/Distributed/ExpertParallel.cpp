//===- ExpertParallel.cpp - dsv3-expert-parallel ---------------------------===//
//
// Shards the routed experts of every MoE layer over the `ranks` ranks of the
// "expert" group. Runs on tensor-level IR (after dsv3-decompose, before
// dsv3-autodiff, which differentiates the exchanges with their own rules).
// The ranks of one group hold the same tokens (one data-parallel replica's
// batch) and compute everything but the routed experts on all of them;
// each routes the whole batch (so balance losses and expert loads need no
// exchange) and dispatches its own block of tokens:
//
//   rank_rows (tokens, choices, gate weights)      this rank's block of tokens
//   moe_dispatch {num_experts = E + 1}             rows by expert; padding last
//   moe_send_counts -> all_to_all of the counts    what each owner will get
//   moe_recv_layout                                where received rows belong
//   all_to_all of the rows                         to the owners (capacity M)
//   moe_dispatch {num_experts = L + 1}             received rows by local expert
//   grouped_linear x3 on the local experts         (param shard "expert")
//   moe_combine with unit weights                  back to the received order
//   all_to_all back (counts swapped)               to the rows' senders
//   moe_combine with the gate weights              this block's expert output
//   all_gather + slice                             every token's, on every rank
//
// The receive capacity M = ranks * block * min(top_k, L) holds the worst
// case (every token sends its rows to this rank), so no token is dropped.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3EXPERTPARALLELPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

constexpr llvm::StringLiteral kExpertGroup = "expert";

RankedTensorType tensorOf(ArrayRef<int64_t> shape, Type element) {
  return RankedTensorType::get(shape, element);
}

/// The routed-expert chain dsv3-decompose emits for one MoE layer.
struct RoutedExperts {
  MoEDispatchOp dispatch;
  GroupedLinearOp gate, up, down;
  SwiGLUOp act;
  MoECombineOp combine;
};

/// The chain starting at `d`, or failure with a diagnostic.
FailureOr<RoutedExperts> matchChain(MoEDispatchOp d) {
  RoutedExperts c;
  c.dispatch = d;
  SmallVector<GroupedLinearOp> readers;
  for (Operation *user : d.getRows().getUsers())
    if (auto g = dyn_cast<GroupedLinearOp>(user))
      readers.push_back(g);
  if (readers.size() != 2 || !d.getRows().hasNUses(2))
    return d.emitOpError() << "dsv3-expert-parallel: expected the rows to feed the gate and "
                              "up grouped linears only";
  auto act = readers[0]->hasOneUse() ? dyn_cast<SwiGLUOp>(*readers[0]->user_begin()) : nullptr;
  if (!act || act.getGate() == act.getUp())
    return d.emitOpError() << "dsv3-expert-parallel: expected a SwiGLU of the two grouped linears";
  c.act = act;
  c.gate = act.getGate().getDefiningOp<GroupedLinearOp>();
  c.up = act.getUp().getDefiningOp<GroupedLinearOp>();
  if (!c.gate || !c.up || !act->hasOneUse() || !c.gate->hasOneUse() || !c.up->hasOneUse())
    return d.emitOpError() << "dsv3-expert-parallel: unexpected users of the expert MLP";
  c.down = dyn_cast<GroupedLinearOp>(*act->user_begin());
  if (!c.down || !c.down->hasOneUse())
    return d.emitOpError() << "dsv3-expert-parallel: expected the down grouped linear";
  c.combine = dyn_cast<MoECombineOp>(*c.down->user_begin());
  if (!c.combine || c.combine.getRowOfSlot() != d.getRowOfSlot())
    return d.emitOpError() << "dsv3-expert-parallel: expected the combine of the dispatch";
  for (GroupedLinearOp g : {c.gate, c.up, c.down}) {
    auto p = g.getWeight().getDefiningOp<ParamOp>();
    if (!p || !p.getStack() || p.getShard())
      return g.emitOpError() << "dsv3-expert-parallel: the weight must be a stacked, "
                                "unsharded dsv3.param";
  }
  return c;
}

/// This rank's block of the stacked expert parameter read by `g`, where
/// the whole stack was read (parameters keep their order, which the layout
/// and seeded initialisation follow).
Value shardedWeight(GroupedLinearOp g, int64_t ranks) {
  auto p = g.getWeight().getDefiningOp<ParamOp>();
  OpBuilder b(p);
  auto type = p.getResult().getType();
  SmallVector<int64_t> shape(type.getShape());
  shape[0] /= ranks;
  auto local = ParamOp::create(b, p.getLoc(), tensorOf(shape, type.getElementType()),
                               p.getNameAttr(), b.getI64IntegerAttr(shape[0]), p.getRoleAttr(),
                               b.getStringAttr(kExpertGroup));
  return local.getResult();
}

LogicalResult shard(RoutedExperts c, int64_t ranks) {
  MoEDispatchOp d = c.dispatch;
  Location loc = d.getLoc();
  OpBuilder b(c.combine);
  Type f32 = b.getF32Type(), i64 = b.getI64Type();
  auto rankAttr = b.getI64IntegerAttr(ranks);
  auto group = b.getStringAttr(kExpertGroup);

  auto xType = d.getX().getType();
  auto idsType = d.getExpertIds().getType();
  int64_t n = xType.getDimSize(0), hidden = xType.getDimSize(1), k = idsType.getDimSize(1);
  int64_t experts = static_cast<int64_t>(d.getNumExperts());
  if (experts % ranks != 0)
    return d.emitOpError() << "dsv3-expert-parallel: " << experts
                           << " experts do not split over " << ranks << " ranks";
  int64_t local = experts / ranks, block = (n + ranks - 1) / ranks;
  int64_t capacity = ranks * block * std::min(k, local);
  Value weights = c.combine.getWeights();

  // This rank's tokens, their choices (padding rows choose the group past
  // every expert) and gate weights.
  auto rankRows = [&](Value v, int64_t pad) {
    auto t = cast<RankedTensorType>(v.getType());
    SmallVector<int64_t> shape(t.getShape());
    shape[0] = block;
    return RankRowsOp::create(b, loc, tensorOf(shape, t.getElementType()), v, rankAttr, group,
                              b.getI64IntegerAttr(pad))
        .getResult();
  };
  Value x = rankRows(d.getX(), 0), ids = rankRows(d.getExpertIds(), experts),
        w = rankRows(weights, 0);
  auto sent = MoEDispatchOp::create(b, loc, tensorOf({block * k, hidden}, f32),
                                    tensorOf({block, k}, i64), tensorOf({block * k}, i64),
                                    tensorOf({experts + 2}, i64), x, ids,
                                    b.getI64IntegerAttr(experts + 1));
  auto counts = MoESendCountsOp::create(b, loc, tensorOf({ranks}, i64),
                                        tensorOf({experts}, i64), sent.getOffsets(),
                                        b.getI64IntegerAttr(experts), rankAttr);
  auto perRank = RankedTensorType::get({ranks}, i64);
  Value blockOfExperts =
      arith::ConstantOp::create(b, loc, DenseElementsAttr::get(perRank, b.getI64IntegerAttr(local)));
  Value received = AllToAllOp::create(b, loc, tensorOf({experts}, i64), counts.getExpertCounts(),
                                      blockOfExperts, blockOfExperts, rankAttr, group);
  auto layout = MoERecvLayoutOp::create(b, loc, perRank, tensorOf({capacity, 1}, i64), received,
                                        rankAttr);
  Value rows = AllToAllOp::create(b, loc, tensorOf({capacity, hidden}, f32), sent.getRows(),
                                  counts.getSendCounts(), layout.getRecvCounts(), rankAttr, group);
  auto mine = MoEDispatchOp::create(b, loc, tensorOf({capacity, hidden}, f32),
                                    tensorOf({capacity, 1}, i64), tensorOf({capacity}, i64),
                                    tensorOf({local + 2}, i64), rows, layout.getLocalExpert(),
                                    b.getI64IntegerAttr(local + 1));
  Value offsets = tensor::ExtractSliceOp::create(
      b, loc, tensorOf({local + 1}, i64), mine.getOffsets(), ArrayRef<OpFoldResult>{b.getIndexAttr(0)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(local + 1)}, ArrayRef<OpFoldResult>{b.getIndexAttr(1)});

  // The experts' MLP on the rows they received.
  int64_t inner = c.gate.getType().getDimSize(1);
  auto innerType = tensorOf({capacity, inner}, f32);
  Value g = GroupedLinearOp::create(b, c.gate.getLoc(), innerType, mine.getRows(),
                                    shardedWeight(c.gate, ranks), offsets);
  Value u = GroupedLinearOp::create(b, c.up.getLoc(), innerType, mine.getRows(),
                                    shardedWeight(c.up, ranks), offsets);
  Value act = SwiGLUOp::create(b, c.act.getLoc(), innerType, g, u);
  Value out = GroupedLinearOp::create(b, c.down.getLoc(), tensorOf({capacity, hidden}, f32), act,
                                      shardedWeight(c.down, ranks), offsets);

  // Back to the received order, to the senders, and into tokens.
  Value ones = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(tensorOf({capacity, 1}, f32), b.getF32FloatAttr(1.0f)));
  Value unsorted = MoECombineOp::create(b, loc, tensorOf({capacity, hidden}, f32), out, ones,
                                        mine.getRowOfSlot());
  Value returned = AllToAllOp::create(b, loc, tensorOf({block * k, hidden}, f32), unsorted,
                                      layout.getRecvCounts(), counts.getSendCounts(), rankAttr,
                                      group);
  Value y = MoECombineOp::create(b, loc, tensorOf({block, hidden}, f32), returned, w,
                                 sent.getRowOfSlot());
  Value all = AllGatherOp::create(b, loc, tensorOf({ranks * block, hidden}, f32), y, rankAttr,
                                  group);
  if (ranks * block != n)
    all = tensor::ExtractSliceOp::create(
        b, loc, tensorOf({n, hidden}, f32), all,
        ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(n), b.getIndexAttr(hidden)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
  c.combine.getResult().replaceAllUsesWith(all);

  SmallVector<Operation *> dead{c.combine, c.down, c.act, c.gate, c.up, d};
  SmallVector<Operation *> params;
  for (GroupedLinearOp gl : {c.gate, c.up, c.down})
    params.push_back(gl.getWeight().getDefiningOp());
  for (Operation *op : dead)
    op->erase();
  for (Operation *p : params)
    if (p->use_empty())
      p->erase();
  return success();
}

struct DSV3ExpertParallelPass
    : dsv3::impl::DSV3ExpertParallelPassBase<DSV3ExpertParallelPass> {
  using Base::Base;
  void runOnOperation() override {
    if (ranks < 1) {
      getOperation()->emitError() << "dsv3-expert-parallel: ranks must be positive, got "
                                  << ranks;
      return signalPassFailure();
    }
    if (ranks == 1)
      return;
    SmallVector<MoEDispatchOp> dispatches;
    getOperation()->walk([&](MoEDispatchOp d) { dispatches.push_back(d); });
    for (MoEDispatchOp d : dispatches) {
      FailureOr<RoutedExperts> chain = matchChain(d);
      if (failed(chain) || failed(shard(*chain, ranks)))
        return signalPassFailure();
    }
  }
};

} // namespace
