//===- MoE.cpp - lowering of dsv3.moe_router and dsv3.moe_experts ---------===//
//
// Part of convert-dsv3-to-linalg. The router computes scores with generics
// and selects experts with per-token scf loops: the k-th pick is the best
// candidate strictly below the previous pick in the order (score desc, id
// asc), so no "already chosen" set is needed, and the kept groups are those
// at or above the topk_group-th group in the same order.
//
// The experts are evaluated densely (every expert on every token, weighted by
// a [tokens, experts] combine matrix that is zero off the selection). The
// result is exact; grouping tokens per expert is a later performance step.
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

    Value inits[] = {lb.empty({n, k}), lb.empty({n, k}, rw.getI64Type())};
    auto tokenLoop = scf::ForOp::create(
        rw, loc, indexConst(rw, loc, 0), indexConst(rw, loc, n),
        indexConst(rw, loc, 1), inits,
        [&](OpBuilder &b, Location l, Value tok, ValueRange outs) {
          // Threshold group: the keepGroups-th best group.
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
                      return ranksBelow(ib, il, gv, g, prev[0], prev[1]);
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

/// dsv3.moe_experts -> combine matrix, batched expert SwiGLU, weighted sum.
struct LowerMoEExperts : OpRewritePattern<MoEExpertsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEExpertsOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    int64_t n = op.getX().getType().getDimSize(0);
    int64_t d = op.getX().getType().getDimSize(1);
    auto gs = op.getGate().getType().getShape();
    int64_t e = gs[0], inner = gs[1];

    // combine[n,e] = sum_k (ids[n,k] == e) * weights[n,k]
    Value combine = lb.generic1(
        {op.getExpertIds(), op.getWeights()}, lb.filled({n, e}, 0.0),
        {lb.map(3, {0, 2}), lb.map(3, {0, 2}), lb.map(3, {0, 1})},
        lb.iters(2, 1), [](OpBuilder &nb, Location l, ValueRange a) {
          Value ex = arith::IndexCastOp::create(
              nb, l, nb.getI64Type(), linalg::IndexOp::create(nb, l, 1));
          Value hit = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, a[0], ex);
          Value add = arith::AddFOp::create(nb, l, a[2], a[1]);
          linalg::YieldOp::create(nb, l, ValueRange{arith::SelectOp::create(nb, l, hit, add, a[2])});
        });
    auto contract = [](OpBuilder &nb, Location l, ValueRange a) {
      Value mul = arith::MulFOp::create(nb, l, a[0], a[1]);
      linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[2], mul)});
    };
    // Loops (e, n, i, d): x[n,d] * W[e,i,d] -> h[e,n,i].
    auto upProject = [&](Value w) {
      return lb.generic1({op.getX(), w}, lb.filled({e, n, inner}, 0.0),
                         {lb.map(4, {1, 3}), lb.map(4, {0, 2, 3}), lb.map(4, {0, 1, 2})},
                         lb.iters(3, 1), contract);
    };
    Value hg = upProject(op.getGate()), hu = upProject(op.getUp());
    Value act = lb.generic1(
        {hg, hu}, lb.empty({e, n, inner}),
        {lb.identity(3), lb.identity(3), lb.identity(3)}, lb.iters(3),
        [](OpBuilder &nb, Location l, ValueRange a) {
          Value silu = arith::MulFOp::create(nb, l, a[0], sigmoid(nb, l, a[0]));
          linalg::YieldOp::create(nb, l, ValueRange{arith::MulFOp::create(nb, l, silu, a[1])});
        });
    // Loops (e, n, d, i): act[e,n,i] * down[e,d,i] -> y[e,n,d].
    Value y = lb.generic1({act, op.getDown()}, lb.filled({e, n, d}, 0.0),
                          {lb.map(4, {0, 1, 3}), lb.map(4, {0, 2, 3}), lb.map(4, {0, 1, 2})},
                          lb.iters(3, 1), contract);
    // Loops (n, d, e): combine[n,e] * y[e,n,d] -> out[n,d], experts ascending.
    Value out = lb.generic1({combine, y}, lb.filled({n, d}, 0.0),
                            {lb.map(3, {0, 2}), lb.map(3, {2, 0, 1}), lb.map(3, {0, 1})},
                            lb.iters(2, 1), contract);
    rw.replaceOp(op, out);
    return success();
  }
};

} // namespace

void dsv3::lowering::populateMoELoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<LowerMoERouter, LowerMoEExperts>(patterns.getContext());
}
