//===- MoE.cpp - lowering of the router, dispatch, grouped GEMMs, combine --===//
//
// Part of convert-dsv3-to-linalg. The router computes scores with generics
// and selects experts with per-token scf loops: the k-th pick is the best
// candidate strictly below the previous pick in the order (score desc, id
// asc), so no "already chosen" set is needed, and the kept groups are those
// at or above the topk_group-th group in the same order.
//
// Routed experts run grouped: dispatch sorts the (token, slot) pairs by
// expert and gathers their rows; each expert's GEMM then covers only its
// rows, and combine gathers the results back per token. The sort and the
// grouped GEMMs here are references (plain reductions, quadratic in the
// pairs for the sort, a compare per row and expert for the weight
// gradient); the CPU pipeline selects kernels for them beforehand
// (lowering/CPU/SelectUkernels.cpp).
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"

#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace dsv3;
using namespace dsv3::lowering;

namespace {

/// `v` ranks below (pv, pi) in the order (value desc, index asc).
Value ranksBelow(OpBuilder &b, Location loc, Value v, Value i, Value pv,
                 Value pi) {
  Value lower = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, v, pv);
  Value tie = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, v, pv);
  Value later = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, i, pi);
  return arith::OrIOp::create(b, loc, lower,
                              arith::AndIOp::create(b, loc, tie, later));
}

/// Scans `count` candidates and returns the best (value, index) among those
/// for which `eligible(b, loc, index, value)` holds; ties keep the lowest
/// index. (-inf, -1) when none is eligible.
std::pair<Value, Value>
argmaxLoop(OpBuilder &b, Location loc, int64_t count,
           llvm::function_ref<Value(OpBuilder &, Location, Value)> valueAt,
           llvm::function_ref<Value(OpBuilder &, Location, Value, Value)> eligible) {
  Value init[] = {f32Const(b, loc, -INFINITY), indexConst(b, loc, -1)};
  auto loop = scf::ForOp::create(
      b, loc, indexConst(b, loc, 0), indexConst(b, loc, count),
      indexConst(b, loc, 1), init,
      [&](OpBuilder &nb, Location l, Value i, ValueRange acc) {
        Value v = valueAt(nb, l, i);
        Value better =
            arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OGT, v, acc[0]);
        Value take = arith::AndIOp::create(nb, l, better, eligible(nb, l, i, v));
        scf::YieldOp::create(
            nb, l,
            ValueRange{arith::SelectOp::create(nb, l, take, v, acc[0]),
                       arith::SelectOp::create(nb, l, take, i, acc[1])});
      });
  return {loop.getResult(0), loop.getResult(1)};
}

/// dsv3.moe_router -> scores, biased scores, group scores, selection loops,
/// weight normalisation.
struct LowerMoERouter : OpRewritePattern<MoERouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoERouterOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    int64_t n = op.getX().getType().getDimSize(0);
    int64_t e = op.getRouter().getType().getDimSize(0);
    int64_t groups = op.getNGroup(), keepGroups = op.getTopkGroup(),
            k = op.getTopK(), groupSize = e / groups;

    Value logits = lb.matmulNT(op.getX(), op.getRouter());
    SmallVector<Value> sc = lb.generic(
        {logits, op.getBias()}, {lb.empty({n, e}), lb.empty({n, e})},
        {lb.identity(2), lb.map(2, {1}), lb.identity(2), lb.identity(2)},
        lb.iters(2), [](OpBuilder &nb, Location l, ValueRange a) {
          Value s = sigmoid(nb, l, a[0]);
          linalg::YieldOp::create(nb, l, ValueRange{s, arith::AddFOp::create(nb, l, s, a[1])});
        });
    Value scores = sc[0], biased = sc[1];

    // Group score: sum of the two best biased scores of each group.
    Value grouped = tensor::ExpandShapeOp::create(
        rw, loc, RankedTensorType::get({n, groups, groupSize}, rw.getF32Type()),
        biased, SmallVector<ReassociationIndices>{{0}, {1, 2}});
    SmallVector<Value> top2 = lb.generic(
        {grouped},
        {lb.filled({n, groups}, -INFINITY), lb.filled({n, groups}, -INFINITY)},
        {lb.identity(3), lb.map(3, {0, 1}), lb.map(3, {0, 1})}, lb.iters(2, 1),
        [](OpBuilder &nb, Location l, ValueRange a) {
          Value gt1 = arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OGT, a[0], a[1]);
          Value gt2 = arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OGT, a[0], a[2]);
          Value m2 = arith::SelectOp::create(
              nb, l, gt1, a[1], arith::SelectOp::create(nb, l, gt2, a[0], a[2]));
          Value m1 = arith::SelectOp::create(nb, l, gt1, a[0], a[1]);
          linalg::YieldOp::create(nb, l, ValueRange{m1, m2});
        });
    Value groupScore =
        groupSize == 1
            ? top2[0]
            : lb.generic1({top2[0], top2[1]}, lb.empty({n, groups}),
                          {lb.identity(2), lb.identity(2), lb.identity(2)},
                          lb.iters(2), [](OpBuilder &nb, Location l, ValueRange a) {
                            linalg::YieldOp::create(
                                nb, l, ValueRange{arith::AddFOp::create(nb, l, a[0], a[1])});
                          });

    // Node-limited routing: nodes of `perNode` consecutive experts, scored
    // by the sum of their `pick` best biased scores; `keepNodes` kept.
    int64_t nodes = op.getNodes() ? static_cast<int64_t>(*op.getNodes()) : 0;
    int64_t keepNodes = op.getMaxNodes() ? static_cast<int64_t>(*op.getMaxNodes()) : 0;
    int64_t perNode = nodes ? e / nodes : e, pick = nodes ? (k + keepNodes - 1) / keepNodes : 0;

    Value inits[] = {lb.empty({n, k}), lb.empty({n, k}, rw.getI64Type())};
    auto tokenLoop = scf::ForOp::create(
        rw, loc, indexConst(rw, loc, 0), indexConst(rw, loc, n),
        indexConst(rw, loc, 1), inits,
        [&](OpBuilder &b, Location l, Value tok, ValueRange outs) {
          // Whether node `j` is kept (true without a node limit).
          std::function<Value(OpBuilder &, Location, Value)> nodeKept =
              [](OpBuilder &ib, Location il, Value) -> Value {
            return arith::ConstantOp::create(ib, il, ib.getBoolAttr(true));
          };
          if (nodes) {
            Value scoresInit = tensor::EmptyOp::create(b, l, ArrayRef<int64_t>{nodes},
                                                       b.getF32Type());
            auto nodeLoop = scf::ForOp::create(
                b, l, indexConst(b, l, 0), indexConst(b, l, nodes), indexConst(b, l, 1),
                ValueRange{scoresInit},
                [&](OpBuilder &nb, Location nl, Value node, ValueRange acc) {
                  Value first = arith::MulIOp::create(nb, nl, node, indexConst(nb, nl, perNode));
                  // Sum of the node's `pick` best: each pick is the best
                  // strictly below the previous one.
                  Value start[] = {f32Const(nb, nl, INFINITY), indexConst(nb, nl, -1),
                                   f32Const(nb, nl, 0.0)};
                  auto pickLoop = scf::ForOp::create(
                      nb, nl, indexConst(nb, nl, 0), indexConst(nb, nl, pick),
                      indexConst(nb, nl, 1), start,
                      [&](OpBuilder &pb, Location pl, Value, ValueRange prev) {
                        auto [v, i] = argmaxLoop(
                            pb, pl, perNode,
                            [&](OpBuilder &ib, Location il, Value x) {
                              Value ex = arith::AddIOp::create(ib, il, first, x);
                              return tensor::ExtractOp::create(ib, il, biased,
                                                               ValueRange{tok, ex})
                                  .getResult();
                            },
                            [&](OpBuilder &ib, Location il, Value x, Value xv) {
                              return ranksBelow(ib, il, xv, x, prev[0], prev[1]);
                            });
                        scf::YieldOp::create(
                            pb, pl, ValueRange{v, i, arith::AddFOp::create(pb, pl, prev[2], v)});
                      });
                  Value updated = tensor::InsertOp::create(nb, nl, pickLoop.getResult(2),
                                                           acc[0], ValueRange{node});
                  scf::YieldOp::create(nb, nl, ValueRange{updated});
                });
            Value nodeScore = nodeLoop.getResult(0);
            // Threshold node: the keepNodes-th best.
            Value start[] = {f32Const(b, l, INFINITY), indexConst(b, l, -1)};
            auto keepLoop = scf::ForOp::create(
                b, l, indexConst(b, l, 0), indexConst(b, l, keepNodes), indexConst(b, l, 1),
                start, [&](OpBuilder &kb, Location kl, Value, ValueRange prev) {
                  auto [v, i] = argmaxLoop(
                      kb, kl, nodes,
                      [&](OpBuilder &ib, Location il, Value j) {
                        return tensor::ExtractOp::create(ib, il, nodeScore, ValueRange{j})
                            .getResult();
                      },
                      [&](OpBuilder &ib, Location il, Value j, Value jv) {
                        return ranksBelow(ib, il, jv, j, prev[0], prev[1]);
                      });
                  scf::YieldOp::create(kb, kl, ValueRange{v, i});
                });
            Value keepNV = keepLoop.getResult(0), keepNI = keepLoop.getResult(1);
            nodeKept = [=](OpBuilder &ib, Location il, Value j) -> Value {
              Value jv = tensor::ExtractOp::create(ib, il, nodeScore, ValueRange{j});
              return arith::XOrIOp::create(
                  ib, il, ranksBelow(ib, il, jv, j, keepNV, keepNI),
                  arith::ConstantOp::create(ib, il, ib.getBoolAttr(true)));
            };
          }
          // The node of group `g` (groups lie within nodes; one group spans
          // them all and is never masked).
          auto groupKept = [&](OpBuilder &ib, Location il, Value g) -> Value {
            if (!nodes || groups == 1)
              return arith::ConstantOp::create(ib, il, ib.getBoolAttr(true));
            return nodeKept(ib, il,
                            arith::DivUIOp::create(ib, il, g, indexConst(ib, il, groups / nodes)));
          };

          // Threshold group: the keepGroups-th best group (of kept nodes).
          Value start[] = {f32Const(b, l, INFINITY), indexConst(b, l, -1)};
          auto groupLoop = scf::ForOp::create(
              b, l, indexConst(b, l, 0), indexConst(b, l, keepGroups),
              indexConst(b, l, 1), start,
              [&](OpBuilder &gb, Location gl, Value, ValueRange prev) {
                auto [v, i] = argmaxLoop(
                    gb, gl, groups,
                    [&](OpBuilder &ib, Location il, Value g) {
                      return tensor::ExtractOp::create(ib, il, groupScore,
                                                       ValueRange{tok, g})
                          .getResult();
                    },
                    [&](OpBuilder &ib, Location il, Value g, Value gv) {
                      return arith::AndIOp::create(ib, il, groupKept(ib, il, g),
                                                   ranksBelow(ib, il, gv, g, prev[0], prev[1]))
                          .getResult();
                    });
                scf::YieldOp::create(gb, gl, ValueRange{v, i});
              });
          Value keepV = groupLoop.getResult(0), keepI = groupLoop.getResult(1);

          SmallVector<Value> expertStart = {f32Const(b, l, INFINITY),
                                            indexConst(b, l, -1), outs[0], outs[1]};
          auto expertLoop = scf::ForOp::create(
              b, l, indexConst(b, l, 0), indexConst(b, l, k),
              indexConst(b, l, 1), expertStart,
              [&](OpBuilder &eb, Location el, Value slot, ValueRange st) {
                auto [v, i] = argmaxLoop(
                    eb, el, e,
                    [&](OpBuilder &ib, Location il, Value ex) {
                      return tensor::ExtractOp::create(ib, il, biased,
                                                       ValueRange{tok, ex})
                          .getResult();
                    },
                    [&](OpBuilder &ib, Location il, Value ex, Value ev) {
                      Value g = arith::DivUIOp::create(ib, il, ex,
                                                       indexConst(ib, il, groupSize));
                      Value gv = tensor::ExtractOp::create(ib, il, groupScore,
                                                           ValueRange{tok, g});
                      // Kept groups rank at or above the threshold group.
                      Value kept = arith::XOrIOp::create(
                          ib, il, ranksBelow(ib, il, gv, g, keepV, keepI),
                          arith::ConstantOp::create(ib, il, ib.getBoolAttr(true)));
                      if (nodes)
                        kept = arith::AndIOp::create(
                            ib, il, kept,
                            nodeKept(ib, il,
                                     arith::DivUIOp::create(ib, il, ex,
                                                            indexConst(ib, il, perNode))));
                      return arith::AndIOp::create(
                                 ib, il, kept, ranksBelow(ib, il, ev, ex, st[0], st[1]))
                          .getResult();
                    });
                // No eligible expert only happens with NaN scores; expert id
                // -1 then matches no expert and the NaN shows in the output.
                Value safe = arith::MaxSIOp::create(eb, el, i, indexConst(eb, el, 0));
                Value w = tensor::ExtractOp::create(eb, el, scores, ValueRange{tok, safe});
                Value id = arith::IndexCastOp::create(eb, el, eb.getI64Type(), i);
                Value ws = tensor::InsertOp::create(eb, el, w, st[2], ValueRange{tok, slot});
                Value ids = tensor::InsertOp::create(eb, el, id, st[3], ValueRange{tok, slot});
                scf::YieldOp::create(eb, el, ValueRange{v, i, ws, ids});
              });
          scf::YieldOp::create(b, l, ValueRange{expertLoop.getResult(2),
                                                expertLoop.getResult(3)});
        });
    Value raw = tokenLoop.getResult(0);

    double scale = op.getRoutedScalingFactor().convertToDouble();
    bool normalize = op.getNormTopkProb();
    Value sum = lb.generic1({raw}, lb.filled({n}, 0.0),
                            {lb.identity(2), lb.map(2, {0})}, lb.iters(1, 1),
                            [](OpBuilder &nb, Location l, ValueRange a) {
                              linalg::YieldOp::create(
                                  nb, l, ValueRange{arith::AddFOp::create(nb, l, a[1], a[0])});
                            });
    Value weights = lb.generic1(
        {raw, sum}, lb.empty({n, k}),
        {lb.identity(2), lb.map(2, {0}), lb.identity(2)}, lb.iters(2),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value w = a[0];
          if (normalize)
            w = arith::DivFOp::create(
                nb, l, w, arith::AddFOp::create(nb, l, a[1], f32Const(nb, l, 1e-20)));
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::MulFOp::create(nb, l, w, f32Const(nb, l, scale))});
        });
    rw.replaceOp(op, {weights, tokenLoop.getResult(1)});
    return success();
  }
};

/// Clamps an expert id as the dispatch kernel does: out-of-range ids (only
/// from NaN scores) count as expert 0.
Value validExpert(OpBuilder &b, Location loc, Value id, int64_t experts) {
  Value zero = i64Const(b, loc, 0);
  Value inRange = arith::AndIOp::create(
      b, loc, arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, id, zero),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, id,
                            i64Const(b, loc, experts)));
  return arith::SelectOp::create(b, loc, inRange, id, zero);
}

/// Generic body step: acc + (cond ? 1 : 0) on i64.
Value countIf(OpBuilder &b, Location loc, Value cond, Value acc) {
  Value one = arith::ExtUIOp::create(b, loc, b.getI64Type(), cond);
  return arith::AddIOp::create(b, loc, acc, one);
}

/// dsv3.moe_dispatch -> a stable counting sort written as reductions:
/// offsets[e] = #pairs with expert < e, a pair's row = offsets[its expert] +
/// #earlier pairs with the same expert, and slot_of_row inverts that map;
/// then the gather of the rows. Quadratic in the pairs: a reference, which
/// targets replace with a sort kernel (the CPU's is runtime/kernels).
struct LowerMoEDispatch : OpRewritePattern<MoEDispatchOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEDispatchOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    int64_t experts = op.getNumExperts();
    auto idShape = op.getExpertIds().getType().getShape();
    int64_t k = idShape[1], pairs = idShape[0] * idShape[1];
    Value ids = lb.generic1(
        {lb.collapseTo1D(op.getExpertIds())}, lb.empty({pairs}, rw.getI64Type()),
        {lb.identity(1), lb.identity(1)}, lb.iters(1),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          linalg::YieldOp::create(nb, l, ValueRange{validExpert(nb, l, a[0], experts)});
        });
    // offsets[e] = #{p : id_p < e}, e in [0, E].
    Value offsets = lb.generic1(
        {ids}, lb.filledInt({experts + 1}, 0), {lb.map(2, {1}), lb.map(2, {0})},
        lb.iters(1, 1), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value e = arith::IndexCastOp::create(nb, l, nb.getI64Type(),
                                               linalg::IndexOp::create(nb, l, 0));
          Value below = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::slt, a[0], e);
          linalg::YieldOp::create(nb, l, ValueRange{countIf(nb, l, below, a[1])});
        });
    // earlier[p] = #{q < p : id_q == id_p}.
    Value earlier = lb.generic1(
        {ids, ids}, lb.filledInt({pairs}, 0),
        {lb.map(2, {0}), lb.map(2, {1}), lb.map(2, {0})}, lb.iters(1, 1),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value before = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ult,
                                               linalg::IndexOp::create(nb, l, 1),
                                               linalg::IndexOp::create(nb, l, 0));
          Value same = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, a[0], a[1]);
          Value both = arith::AndIOp::create(nb, l, before, same);
          linalg::YieldOp::create(nb, l, ValueRange{countIf(nb, l, both, a[2])});
        });
    Value rowOfPair = lb.generic1(
        {ids, earlier}, lb.empty({pairs}, rw.getI64Type()),
        {lb.identity(1), lb.identity(1), lb.identity(1)}, lb.iters(1),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value start = tensor::ExtractOp::create(
              nb, l, offsets,
              ValueRange{arith::IndexCastOp::create(nb, l, nb.getIndexType(), a[0])});
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddIOp::create(nb, l, start, a[1])});
        });
    // slot_of_row[r] = the pair p whose row is r.
    Value slotOfRow = lb.generic1(
        {rowOfPair}, lb.filledInt({pairs}, 0), {lb.map(2, {1}), lb.map(2, {0})},
        lb.iters(1, 1), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value r = arith::IndexCastOp::create(nb, l, nb.getI64Type(),
                                               linalg::IndexOp::create(nb, l, 0));
          Value p = arith::IndexCastOp::create(nb, l, nb.getI64Type(),
                                               linalg::IndexOp::create(nb, l, 1));
          Value hit = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, a[0], r);
          linalg::YieldOp::create(nb, l, ValueRange{arith::SelectOp::create(nb, l, hit, p, a[1])});
        });
    Value rowOfSlot = tensor::ExpandShapeOp::create(
        rw, loc, op.getRowOfSlot().getType(), rowOfPair,
        SmallVector<ReassociationIndices>{{0, 1}});
    Value rows = gatherDispatchedRows(rw, loc, op.getX(), slotOfRow, k);
    rw.replaceOp(op, {rows, rowOfSlot, slotOfRow, offsets});
    return success();
  }
};

/// dsv3.moe_send_counts -> differences of the offsets: per expert, and per
/// block of `num_experts / ranks` experts.
struct LowerMoESendCounts : OpRewritePattern<MoESendCountsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoESendCountsOp op, PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    int64_t experts = static_cast<int64_t>(op.getNumExperts());
    int64_t ranks = static_cast<int64_t>(op.getRanks());
    Value offsets = op.getOffsets();
    auto span = [&](int64_t count, int64_t width) {
      return lb.generic1({}, lb.empty({count}, rw.getI64Type()), {lb.identity(1)}, lb.iters(1),
                         [&](OpBuilder &nb, Location l, ValueRange) {
                           Value i = linalg::IndexOp::create(nb, l, 0);
                           Value w = indexConst(nb, l, width);
                           Value first = arith::MulIOp::create(nb, l, i, w);
                           Value last = arith::AddIOp::create(nb, l, first, w);
                           Value a = tensor::ExtractOp::create(nb, l, offsets, ValueRange{first});
                           Value z = tensor::ExtractOp::create(nb, l, offsets, ValueRange{last});
                           linalg::YieldOp::create(nb, l,
                                                   ValueRange{arith::SubIOp::create(nb, l, z, a)});
                         });
    };
    Value perRank = span(ranks, experts / ranks);
    Value perExpert = span(experts, 1);
    rw.replaceOp(op, {perRank, perExpert});
    return success();
  }
};

/// dsv3.moe_recv_layout -> per-source sums of the counts, and for each row
/// of the receive buffer the (source, expert) segment holding it: #segments
/// that end at or before the row, modulo the experts per rank.
struct LowerMoERecvLayout : OpRewritePattern<MoERecvLayoutOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoERecvLayoutOp op, PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Location loc = op.getLoc();
    int64_t ranks = static_cast<int64_t>(op.getRanks());
    int64_t segments = op.getCounts().getType().getDimSize(0), local = segments / ranks;
    int64_t capacity = op.getLocalExpert().getType().getDimSize(0);
    Value counts = op.getCounts();
    Value bySource = tensor::ExpandShapeOp::create(
        rw, loc, RankedTensorType::get({ranks, local}, rw.getI64Type()), counts,
        SmallVector<ReassociationIndices>{{0, 1}});
    Value recvCounts = lb.generic1(
        {bySource}, lb.filledInt({ranks}, 0), {lb.identity(2), lb.map(2, {0})}, lb.iters(1, 1),
        [](OpBuilder &nb, Location l, ValueRange a) {
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddIOp::create(nb, l, a[1], a[0])});
        });
    // ends[i] = counts[0] + ... + counts[i].
    Value ends = lb.generic1(
        {counts}, lb.filledInt({segments}, 0), {lb.map(2, {1}), lb.map(2, {0})}, lb.iters(1, 1),
        [](OpBuilder &nb, Location l, ValueRange a) {
          Value upTo = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ule,
                                             linalg::IndexOp::create(nb, l, 1),
                                             linalg::IndexOp::create(nb, l, 0));
          Value add = arith::SelectOp::create(nb, l, upTo, a[0], i64Const(nb, l, 0));
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddIOp::create(nb, l, a[1], add)});
        });
    Value segment = lb.generic1(
        {ends}, lb.filledInt({capacity}, 0), {lb.map(2, {1}), lb.map(2, {0})}, lb.iters(1, 1),
        [](OpBuilder &nb, Location l, ValueRange a) {
          Value row = arith::IndexCastOp::create(nb, l, nb.getI64Type(),
                                                 linalg::IndexOp::create(nb, l, 0));
          Value ended = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::sle, a[0], row);
          linalg::YieldOp::create(nb, l, ValueRange{countIf(nb, l, ended, a[1])});
        });
    Value expert = lb.generic1(
        {segment}, lb.empty({capacity}, rw.getI64Type()), {lb.identity(1), lb.identity(1)},
        lb.iters(1), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value past = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::sge, a[0],
                                             i64Const(nb, l, segments));
          Value e = arith::RemSIOp::create(nb, l, a[0], i64Const(nb, l, local));
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::SelectOp::create(nb, l, past, i64Const(nb, l, local), e)});
        });
    Value localExpert = tensor::ExpandShapeOp::create(
        rw, loc, op.getLocalExpert().getType(), expert, SmallVector<ReassociationIndices>{{0, 1}});
    rw.replaceOp(op, {recvCounts, localExpert});
    return success();
  }
};

/// group[r] = the expert whose rows [offsets[e], offsets[e+1]) hold row r:
/// #{e < E : offsets[e+1] <= r}; E for rows past every group.
Value groupOfRows(LinalgBuilder &lb, Value offsets, int64_t rows) {
  int64_t experts = cast<RankedTensorType>(offsets.getType()).getDimSize(0) - 1;
  Value ends = tensor::ExtractSliceOp::create(
      lb.builder(), lb.location(), offsets, ArrayRef<OpFoldResult>{lb.builder().getIndexAttr(1)},
      ArrayRef<OpFoldResult>{lb.builder().getIndexAttr(experts)},
      ArrayRef<OpFoldResult>{lb.builder().getIndexAttr(1)});
  return lb.generic1(
      {ends}, lb.filledInt({rows}, 0), {lb.map(2, {1}), lb.map(2, {0})}, lb.iters(1, 1),
      [&](OpBuilder &nb, Location l, ValueRange a) {
        Value r = arith::IndexCastOp::create(nb, l, nb.getI64Type(),
                                             linalg::IndexOp::create(nb, l, 0));
        Value ended = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::sle, a[0], r);
        linalg::YieldOp::create(nb, l, ValueRange{countIf(nb, l, ended, a[1])});
      });
}

/// out[r, c] = sum_j lhs[r, j] w[group(r), c, j] (or w[group(r), j, c] with
/// `transposed`), 0 for rows outside every group: the grouped GEMMs'
/// reference, each row reading its expert's weight with tensor.extract.
Value groupedMatmul(OpBuilder &b, Location loc, Value lhs, Value w, Value offsets,
                   RankedTensorType resultType, bool transposed) {
  LinalgBuilder lb(b, loc);
  auto shape = resultType.getShape();
  int64_t experts = cast<RankedTensorType>(w.getType()).getDimSize(0);
  Value group = groupOfRows(lb, offsets, shape[0]);
  return lb.generic1(
      {lhs, group}, lb.filled(shape, 0.0),
      {lb.map(3, {0, 2}), lb.map(3, {0}), lb.map(3, {0, 1})}, lb.iters(2, 1),
      [&](OpBuilder &nb, Location l, ValueRange a) {
        Value inGroup = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::slt, a[1],
                                              i64Const(nb, l, experts));
        Value c = linalg::IndexOp::create(nb, l, 1), j = linalg::IndexOp::create(nb, l, 2);
        Value wv = tensor::ExtractOp::create(
            nb, l, w,
            ValueRange{clampedIndex(nb, l, a[1], experts), transposed ? j : c,
                       transposed ? c : j});
        Value sum = arith::AddFOp::create(nb, l, a[2], arith::MulFOp::create(nb, l, a[0], wv));
        linalg::YieldOp::create(nb, l,
                                ValueRange{arith::SelectOp::create(nb, l, inGroup, sum, a[2])});
      });
}

/// y[r, n] = sum_k x[r, k] w[group(r), n, k].
struct LowerGroupedLinear : OpRewritePattern<GroupedLinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GroupedLinearOp op, PatternRewriter &rw) const override {
    rw.replaceOp(op, groupedMatmul(rw, op.getLoc(), op.getX(), op.getWeight(),
                                   op.getOffsets(), op.getType(), false));
    return success();
  }
};

/// dx[r, k] = sum_n dy[r, n] w[group(r), n, k].
struct LowerGroupedLinearGradInput : OpRewritePattern<GroupedLinearGradInputOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GroupedLinearGradInputOp op,
                                PatternRewriter &rw) const override {
    rw.replaceOp(op, groupedMatmul(rw, op.getLoc(), op.getDy(), op.getWeight(),
                                   op.getOffsets(), op.getType(), true));
    return success();
  }
};

/// dW[e, n, k] = sum over the rows r of group e of dy[r, n] x[r, k].
struct LowerGroupedLinearGradWeight : OpRewritePattern<GroupedLinearGradWeightOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GroupedLinearGradWeightOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto shape = op.getType().getShape();
    int64_t rows = op.getDy().getType().getDimSize(0);
    Value group = groupOfRows(lb, op.getOffsets(), rows);
    rw.replaceOp(
        op, lb.generic1({op.getDy(), op.getX(), group}, lb.filled(shape, 0.0),
                        {lb.map(4, {3, 1}), lb.map(4, {3, 2}), lb.map(4, {3}), lb.map(4, {0, 1, 2})},
                        lb.iters(3, 1), [&](OpBuilder &nb, Location l, ValueRange a) {
                          Value e = arith::IndexCastOp::create(
                              nb, l, nb.getI64Type(), linalg::IndexOp::create(nb, l, 0));
                          Value mine = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, a[2], e);
                          Value sum = arith::AddFOp::create(
                              nb, l, a[3], arith::MulFOp::create(nb, l, a[0], a[1]));
                          linalg::YieldOp::create(
                              nb, l, ValueRange{arith::SelectOp::create(nb, l, mine, sum, a[3])});
                        }));
    return success();
  }
};


/// Generic body: yields acc + factor * rows[rowId, index(column)], the row id
/// clamped into range.
void accumulateRowElement(OpBuilder &b, Location loc, Value rows, Value rowId,
                          unsigned column, Value factor, Value acc) {
  int64_t numRows = cast<RankedTensorType>(rows.getType()).getDimSize(0);
  Value v = tensor::ExtractOp::create(
      b, loc, rows,
      ValueRange{clampedIndex(b, loc, rowId, numRows),
                 linalg::IndexOp::create(b, loc, column)});
  Value t = arith::MulFOp::create(b, loc, factor, v);
  linalg::YieldOp::create(b, loc, ValueRange{arith::AddFOp::create(b, loc, acc, t)});
}

/// dsv3.moe_combine -> loops (n, d, k): y[n,d] += w[n,k] rows[row(n,k), d],
/// slots in order.
struct LowerMoECombine : OpRewritePattern<MoECombineOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoECombineOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value rows = op.getRows();
    Value y = lb.generic1(
        {op.getWeights(), op.getRowOfSlot()},
        lb.filled(op.getType().getShape(), 0.0),
        {lb.map(3, {0, 2}), lb.map(3, {0, 2}), lb.map(3, {0, 1})},
        lb.iters(2, 1), [&](OpBuilder &nb, Location l, ValueRange a) {
          accumulateRowElement(nb, l, rows, a[1], /*column=*/1, a[0], a[2]);
        });
    rw.replaceOp(op, y);
    return success();
  }
};

/// dsv3.moe_combine_grad -> a scatter of dy to the rows (through the inverse
/// permutation, so each row is written once) and per-slot dot products.
struct LowerMoECombineGrad : OpRewritePattern<MoECombineGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoECombineGradOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value rows = op.getRows(), weights = op.getWeights(), dy = op.getDy();
    auto ws = op.getWeights().getType().getShape();
    int64_t n = ws[0], k = ws[1];
    // drows[r, d] = w[s / K, s % K] * dy[s / K, d], s = slot_of_row[r].
    Value drows = lb.generic1(
        {op.getSlotOfRow()}, lb.empty(op.getDrows().getType().getShape()),
        {lb.map(2, {0}), lb.identity(2)}, lb.iters(2),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value slot = clampedIndex(nb, l, a[0], n * k);
          Value kc = indexConst(nb, l, k);
          Value token = arith::DivUIOp::create(nb, l, slot, kc);
          Value j = arith::RemUIOp::create(nb, l, slot, kc);
          Value w = tensor::ExtractOp::create(nb, l, weights, ValueRange{token, j});
          Value g = tensor::ExtractOp::create(
              nb, l, dy, ValueRange{token, linalg::IndexOp::create(nb, l, 1)});
          linalg::YieldOp::create(nb, l, ValueRange{arith::MulFOp::create(nb, l, w, g)});
        });
    // dweights[n, k] = sum_d dy[n, d] rows[row(n,k), d]; loops (n, k, d).
    Value dweights = lb.generic1(
        {op.getRowOfSlot(), dy}, lb.filled(ws, 0.0),
        {lb.map(3, {0, 1}), lb.map(3, {0, 2}), lb.map(3, {0, 1})},
        lb.iters(2, 1), [&](OpBuilder &nb, Location l, ValueRange a) {
          accumulateRowElement(nb, l, rows, a[0], /*column=*/2, a[1], a[2]);
        });
    rw.replaceOp(op, {drows, dweights});
    return success();
  }
};

/// out[n,e] = sum_k (ids[n,k] == e) * values[n,k]: per-slot values spread
/// over the expert axis.
Value scatterToExperts(LinalgBuilder &lb, Value ids, Value values,
                       int64_t experts) {
  int64_t n = cast<RankedTensorType>(ids.getType()).getDimSize(0);
  return lb.generic1(
      {ids, values}, lb.filled({n, experts}, 0.0),
      {lb.map(3, {0, 2}), lb.map(3, {0, 2}), lb.map(3, {0, 1})},
      lb.iters(2, 1), [](OpBuilder &nb, Location l, ValueRange v) {
        Value ex = arith::IndexCastOp::create(
            nb, l, nb.getI64Type(), linalg::IndexOp::create(nb, l, 1));
        Value hit = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, v[0], ex);
        Value add = arith::AddFOp::create(nb, l, v[2], v[1]);
        linalg::YieldOp::create(nb, l, ValueRange{arith::SelectOp::create(nb, l, hit, add, v[2])});
      });
}

/// dsv3.moe_router_grad -> gradient of the chosen sigmoid scores through the
/// normalisation and scaling, scattered to the router logits.
struct LowerMoERouterGrad : OpRewritePattern<MoERouterGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoERouterGradOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value logits = op.getLogits(), ids = op.getExpertIds(), dw = op.getDweights();
    auto ls = op.getLogits().getType().getShape();
    auto ks = op.getDweights().getType().getShape();
    int64_t n = ls[0], e = ls[1];
    double scale = op.getRoutedScalingFactor().convertToDouble();
    bool normalize = op.getNormTopkProb();
    // Unbiased scores of the chosen experts.
    Value chosen = lb.generic1(
        {ids}, lb.empty(ks), {lb.identity(2), lb.identity(2)}, lb.iters(2),
        [&](OpBuilder &nb, Location l, ValueRange v) {
          Value tok = linalg::IndexOp::create(nb, l, 0);
          Value logit = tensor::ExtractOp::create(
              nb, l, logits, ValueRange{tok, clampedIndex(nb, l, v[0], e)});
          linalg::YieldOp::create(nb, l, ValueRange{sigmoid(nb, l, logit)});
        });
    // sum_k s_k and sum_k dw_k s_k per token.
    SmallVector<Value> sums = lb.generic(
        {chosen, dw}, {lb.filled({n}, 0.0), lb.filled({n}, 0.0)},
        {lb.identity(2), lb.identity(2), lb.map(2, {0}), lb.map(2, {0})},
        lb.iters(1, 1), [](OpBuilder &nb, Location l, ValueRange v) {
          Value s = arith::AddFOp::create(nb, l, v[2], v[0]);
          Value d = arith::AddFOp::create(nb, l, v[3],
                                          arith::MulFOp::create(nb, l, v[0], v[1]));
          linalg::YieldOp::create(nb, l, ValueRange{s, d});
        });
    // d/ds_k of scale * s_k / (sum + 1e-20): scale * (dw_k / S - sum(dw s) / S^2)
    Value dchosen = lb.generic1(
        {dw, sums[0], sums[1]}, lb.empty(ks),
        {lb.identity(2), lb.map(2, {0}), lb.map(2, {0}), lb.identity(2)},
        lb.iters(2), [&](OpBuilder &nb, Location l, ValueRange v) {
          Value g = v[0];
          if (normalize) {
            Value denom = arith::AddFOp::create(nb, l, v[1], f32Const(nb, l, 1e-20));
            Value a = arith::DivFOp::create(nb, l, v[0], denom);
            Value b = arith::DivFOp::create(
                nb, l, v[2], arith::MulFOp::create(nb, l, denom, denom));
            g = arith::SubFOp::create(nb, l, a, b);
          }
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::MulFOp::create(nb, l, g, f32Const(nb, l, scale))});
        });
    // Scatter to experts, then through the sigmoid: ds * s (1 - s).
    Value dscores = scatterToExperts(lb, ids, dchosen, e);
    Value dlogits = lb.generic1(
        {logits, dscores}, lb.empty({n, e}),
        {lb.identity(2), lb.identity(2), lb.identity(2)}, lb.iters(2),
        [](OpBuilder &nb, Location l, ValueRange v) {
          Value s = sigmoid(nb, l, v[0]);
          Value ds = arith::MulFOp::create(
              nb, l, s, arith::SubFOp::create(nb, l, f32Const(nb, l, 1.0), s));
          linalg::YieldOp::create(nb, l, ValueRange{arith::MulFOp::create(nb, l, v[1], ds)});
        });
    rw.replaceOp(op, dlogits);
    return success();
  }
};

/// Per-token sigmoid scores, their per-token sums and per-sequence expert
/// counts: the pieces of the sequence-wise balance loss.
struct BalanceTerms {
  Value scores; // [B, T, E]
  Value sums;   // [B, T]
  Value counts; // [B, E]
  int64_t b, t, e, k;
};

BalanceTerms balanceTerms(LinalgBuilder &lb, Value logits, Value ids) {
  BalanceTerms bt;
  auto ls = cast<RankedTensorType>(logits.getType()).getShape();
  bt.b = ls[0];
  bt.t = ls[1];
  bt.e = ls[2];
  bt.k = cast<RankedTensorType>(ids.getType()).getDimSize(1);
  SmallVector<Value> sc = lb.generic(
      {logits}, {lb.empty(ls), lb.filled({bt.b, bt.t}, 0.0)},
      {lb.identity(3), lb.identity(3), lb.map(3, {0, 1})}, lb.iters(2, 1),
      [](OpBuilder &nb, Location l, ValueRange a) {
        Value s = sigmoid(nb, l, a[0]);
        linalg::YieldOp::create(nb, l, ValueRange{s, arith::AddFOp::create(nb, l, a[2], s)});
      });
  bt.scores = sc[0];
  bt.sums = sc[1];
  Value ids3 = tensor::ExpandShapeOp::create(
      lb.builder(), lb.location(),
      RankedTensorType::get({bt.b, bt.t, bt.k}, lb.builder().getI64Type()), ids,
      SmallVector<ReassociationIndices>{{0, 1}, {2}});
  // Loops (b, e, t, k): count the selections of expert e in sequence b.
  bt.counts = lb.generic1(
      {ids3}, lb.filled({bt.b, bt.e}, 0.0),
      {lb.map(4, {0, 2, 3}), lb.map(4, {0, 1})}, lb.iters(2, 2),
      [](OpBuilder &nb, Location l, ValueRange a) {
        Value ex = arith::IndexCastOp::create(nb, l, nb.getI64Type(),
                                              linalg::IndexOp::create(nb, l, 1));
        Value hit = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, a[0], ex);
        Value inc = arith::AddFOp::create(nb, l, a[1], f32Const(nb, l, 1.0));
        linalg::YieldOp::create(nb, l, ValueRange{arith::SelectOp::create(nb, l, hit, inc, a[1])});
      });
  return bt;
}

/// The constant in front of count_i * sum_t s'_i: alpha/B * E/(K T) * 1/T.
double balanceScale(const BalanceTerms &bt, double alpha) {
  return alpha * bt.e / (double(bt.b) * bt.k * bt.t * bt.t);
}

/// dsv3.moe_balance_loss -> alpha/B sum_b sum_i f_i P_i.
struct LowerMoEBalanceLoss : OpRewritePattern<MoEBalanceLossOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEBalanceLossOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    BalanceTerms bt = balanceTerms(lb, op.getLogits(), op.getExpertIds());
    double scale = balanceScale(bt, op.getAlpha().convertToDouble());
    // Loops (b, t, e): count[b,e] * s[b,t,e] / S[b,t], all reduced.
    Value total = lb.generic1(
        {bt.counts, bt.scores, bt.sums}, lb.filled({}, 0.0),
        {lb.map(3, {0, 2}), lb.identity(3), lb.map(3, {0, 1}),
         AffineMap::get(3, 0, {}, rw.getContext())},
        lb.iters(0, 3), [](OpBuilder &nb, Location l, ValueRange a) {
          Value sn = arith::DivFOp::create(nb, l, a[1], a[2]);
          Value t = arith::MulFOp::create(nb, l, a[0], sn);
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[3], t)});
        });
    Value loss = lb.generic1(
        {total}, lb.empty({}),
        {AffineMap::get(0, 0, {}, rw.getContext()), AffineMap::get(0, 0, {}, rw.getContext())},
        {}, [&](OpBuilder &nb, Location l, ValueRange a) {
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::MulFOp::create(nb, l, a[0], f32Const(nb, l, scale))});
        });
    rw.replaceOp(op, loss);
    return success();
  }
};

/// dsv3.moe_balance_loss_grad -> with c = scale * count:
/// dlogit = dloss * (c_e - sum_j c_j s'_j) / S * s (1 - s).
struct LowerMoEBalanceLossGrad : OpRewritePattern<MoEBalanceLossGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEBalanceLossGradOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    BalanceTerms bt = balanceTerms(lb, op.getLogits(), op.getExpertIds());
    double scale = balanceScale(bt, op.getAlpha().convertToDouble());
    // dot[b,t] = sum_e count[b,e] s[b,t,e] / S[b,t]
    Value dot = lb.generic1(
        {bt.counts, bt.scores, bt.sums}, lb.filled({bt.b, bt.t}, 0.0),
        {lb.map(3, {0, 2}), lb.identity(3), lb.map(3, {0, 1}), lb.map(3, {0, 1})},
        lb.iters(2, 1), [](OpBuilder &nb, Location l, ValueRange a) {
          Value sn = arith::DivFOp::create(nb, l, a[1], a[2]);
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::AddFOp::create(nb, l, a[3], arith::MulFOp::create(nb, l, a[0], sn))});
        });
    Value dl = lb.generic1(
        {bt.counts, bt.scores, bt.sums, dot, op.getDloss()},
        lb.empty({bt.b, bt.t, bt.e}),
        {lb.map(3, {0, 2}), lb.identity(3), lb.map(3, {0, 1}), lb.map(3, {0, 1}),
         AffineMap::get(3, 0, {}, rw.getContext()), lb.identity(3)},
        lb.iters(3), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value diff = arith::SubFOp::create(nb, l, a[0], a[3]);
          Value ds = arith::DivFOp::create(nb, l, diff, a[2]);
          Value sig = arith::MulFOp::create(
              nb, l, a[1], arith::SubFOp::create(nb, l, f32Const(nb, l, 1.0), a[1]));
          Value g = arith::MulFOp::create(nb, l, arith::MulFOp::create(nb, l, ds, sig),
                                          arith::MulFOp::create(nb, l, a[4], f32Const(nb, l, scale)));
          linalg::YieldOp::create(nb, l, ValueRange{g});
        });
    rw.replaceOp(op, dl);
    return success();
  }
};

} // namespace

Value dsv3::lowering::gatherDispatchedRows(OpBuilder &b, Location loc, Value x,
                                           Value slotOfRow, int64_t k) {
  LinalgBuilder lb(b, loc);
  auto xs = cast<RankedTensorType>(x.getType()).getShape();
  int64_t rows = cast<RankedTensorType>(slotOfRow.getType()).getDimSize(0);
  return lb.generic1(
      {slotOfRow}, lb.empty({rows, xs[1]}), {lb.map(2, {0}), lb.identity(2)}, lb.iters(2),
      [&](OpBuilder &nb, Location l, ValueRange a) {
        Value token = arith::DivSIOp::create(nb, l, a[0], i64Const(nb, l, k));
        Value src = tensor::ExtractOp::create(
            nb, l, x,
            ValueRange{clampedIndex(nb, l, token, xs[0]), linalg::IndexOp::create(nb, l, 1)});
        linalg::YieldOp::create(nb, l, ValueRange{src});
      });
}

void dsv3::lowering::populateMoELoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<LowerMoERouter, LowerMoEDispatch, LowerMoESendCounts, LowerMoERecvLayout,
               LowerGroupedLinear,
               LowerGroupedLinearGradInput, LowerGroupedLinearGradWeight,
               LowerMoECombine, LowerMoECombineGrad, LowerMoERouterGrad,
               LowerMoEBalanceLoss, LowerMoEBalanceLossGrad>(patterns.getContext());
}
