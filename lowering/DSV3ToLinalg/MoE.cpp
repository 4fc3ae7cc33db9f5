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

/// The dense expert evaluation shared by the forward and both gradients.
struct ExpertActivations {
  Value combine; // [N, E]: gate weight of expert e for token n, or 0
  Value hg, hu;  // [E, N, I]: gate and up projections
  Value act;     // [E, N, I]: silu(hg) * hu
  Value y;       // [E, N, D]: expert outputs
};

ExpertActivations expertActivations(LinalgBuilder &lb, Value x, Value weights,
                                    Value ids, Value gate, Value up,
                                    Value down) {
  auto xs = cast<RankedTensorType>(x.getType()).getShape();
  auto gs = cast<RankedTensorType>(gate.getType()).getShape();
  int64_t n = xs[0], d = xs[1], e = gs[0], inner = gs[1];
  auto mac = LinalgBuilder::multiplyAccumulate;
  ExpertActivations a;
  a.combine = scatterToExperts(lb, ids, weights, e);
  // Loops (e, n, i, d): x[n,d] * W[e,i,d] -> h[e,n,i].
  auto upProject = [&](Value w) {
    return lb.generic1({x, w}, lb.filled({e, n, inner}, 0.0),
                       {lb.map(4, {1, 3}), lb.map(4, {0, 2, 3}), lb.map(4, {0, 1, 2})},
                       lb.iters(3, 1), mac);
  };
  a.hg = upProject(gate);
  a.hu = upProject(up);
  a.act = lb.generic1({a.hg, a.hu}, lb.empty({e, n, inner}),
                      {lb.identity(3), lb.identity(3), lb.identity(3)},
                      lb.iters(3), [](OpBuilder &nb, Location l, ValueRange v) {
                        linalg::YieldOp::create(nb, l, ValueRange{siluTimes(nb, l, v[0], v[1])});
                      });
  // Loops (e, n, d, i): act[e,n,i] * down[e,d,i] -> y[e,n,d].
  a.y = lb.generic1({a.act, down}, lb.filled({e, n, d}, 0.0),
                    {lb.map(4, {0, 1, 3}), lb.map(4, {0, 2, 3}), lb.map(4, {0, 1, 2})},
                    lb.iters(3, 1), mac);
  return a;
}

/// Gradients flowing back into the experts from dy [N, D].
struct ExpertBackward {
  Value dy3;     // [E, N, D]: combine[n,e] * dy[n,d]
  Value dhg, dhu; // [E, N, I]
};

ExpertBackward expertBackward(LinalgBuilder &lb, const ExpertActivations &a,
                              Value down, Value dy) {
  auto ys = cast<RankedTensorType>(a.y.getType()).getShape();
  auto hs = cast<RankedTensorType>(a.hg.getType()).getShape();
  ExpertBackward g;
  g.dy3 = lb.generic1({a.combine, dy}, lb.empty(ys),
                      {lb.map(3, {1, 0}), lb.map(3, {1, 2}), lb.identity(3)},
                      lb.iters(3), [](OpBuilder &nb, Location l, ValueRange v) {
                        linalg::YieldOp::create(nb, l, ValueRange{arith::MulFOp::create(nb, l, v[0], v[1])});
                      });
  // Loops (e, n, i, d): dy3[e,n,d] * down[e,d,i] -> dact[e,n,i].
  Value dact = lb.generic1({g.dy3, down}, lb.filled(hs, 0.0),
                           {lb.map(4, {0, 1, 3}), lb.map(4, {0, 3, 2}), lb.map(4, {0, 1, 2})},
                           lb.iters(3, 1), LinalgBuilder::multiplyAccumulate);
  SmallVector<Value> d = lb.generic(
      {a.hg, a.hu, dact}, {lb.empty(hs), lb.empty(hs)},
      {lb.identity(3), lb.identity(3), lb.identity(3), lb.identity(3), lb.identity(3)},
      lb.iters(3), [](OpBuilder &nb, Location l, ValueRange v) {
        auto [dg, du] = siluTimesGrad(nb, l, v[0], v[1], v[2]);
        linalg::YieldOp::create(nb, l, ValueRange{dg, du});
      });
  g.dhg = d[0];
  g.dhu = d[1];
  return g;
}

/// dsv3.moe_experts -> dense expert evaluation, weighted sum over experts.
struct LowerMoEExperts : OpRewritePattern<MoEExpertsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEExpertsOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    ExpertActivations a =
        expertActivations(lb, op.getX(), op.getWeights(), op.getExpertIds(),
                          op.getGate(), op.getUp(), op.getDown());
    // Loops (n, d, e): combine[n,e] * y[e,n,d] -> out[n,d], experts ascending.
    Value out = lb.generic1({a.combine, a.y},
                            lb.filled(op.getX().getType().getShape(), 0.0),
                            {lb.map(3, {0, 2}), lb.map(3, {2, 0, 1}), lb.map(3, {0, 1})},
                            lb.iters(2, 1), LinalgBuilder::multiplyAccumulate);
    rw.replaceOp(op, out);
    return success();
  }
};

/// dsv3.moe_experts_grad_input -> token and gate-weight gradients.
struct LowerMoEExpertsGradInput : OpRewritePattern<MoEExpertsGradInputOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEExpertsGradInputOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto mac = LinalgBuilder::multiplyAccumulate;
    ExpertActivations a =
        expertActivations(lb, op.getX(), op.getWeights(), op.getExpertIds(),
                          op.getGate(), op.getUp(), op.getDown());
    ExpertBackward g = expertBackward(lb, a, op.getDown(), op.getDy());
    auto ws = op.getWeights().getType().getShape();
    int64_t n = ws[0], e = op.getGate().getType().getDimSize(0);
    // dcombine[n,e] = sum_d dy[n,d] y[e,n,d]; loops (n, e, d).
    Value dcombine = lb.generic1({op.getDy(), a.y}, lb.filled({n, e}, 0.0),
                                 {lb.map(3, {0, 2}), lb.map(3, {1, 0, 2}), lb.map(3, {0, 1})},
                                 lb.iters(2, 1), mac);
    Value dweights = lb.generic1(
        {op.getExpertIds()}, lb.empty(ws), {lb.identity(2), lb.identity(2)},
        lb.iters(2), [&](OpBuilder &nb, Location l, ValueRange v) {
          Value tok = linalg::IndexOp::create(nb, l, 0);
          Value ex = clampedIndex(nb, l, v[0], e);
          linalg::YieldOp::create(
              nb, l, ValueRange{tensor::ExtractOp::create(nb, l, dcombine, ValueRange{tok, ex})});
        });
    // dx[n,d] = sum_{e,i} dhg[e,n,i] gate[e,i,d] + dhu[e,n,i] up[e,i,d];
    // loops (n, d, e, i).
    auto maps = SmallVector<AffineMap>{lb.map(4, {2, 0, 3}), lb.map(4, {2, 3, 1}),
                                       lb.map(4, {0, 1})};
    Value dx = lb.generic1({g.dhg, op.getGate()},
                           lb.filled(op.getX().getType().getShape(), 0.0), maps,
                           lb.iters(2, 2), mac);
    dx = lb.generic1({g.dhu, op.getUp()}, dx, maps, lb.iters(2, 2), mac);
    rw.replaceOp(op, {dx, dweights});
    return success();
  }
};

/// dsv3.moe_experts_grad_weight -> expert weight gradients.
struct LowerMoEExpertsGradWeight : OpRewritePattern<MoEExpertsGradWeightOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEExpertsGradWeightOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto mac = LinalgBuilder::multiplyAccumulate;
    ExpertActivations a =
        expertActivations(lb, op.getX(), op.getWeights(), op.getExpertIds(),
                          op.getGate(), op.getUp(), op.getDown());
    ExpertBackward g = expertBackward(lb, a, op.getDown(), op.getDy());
    // ddown[e,d,i] = sum_n dy3[e,n,d] act[e,n,i]; loops (e, d, i, n).
    Value ddown = lb.generic1({g.dy3, a.act},
                              lb.filled(op.getDown().getType().getShape(), 0.0),
                              {lb.map(4, {0, 3, 1}), lb.map(4, {0, 3, 2}), lb.map(4, {0, 1, 2})},
                              lb.iters(3, 1), mac);
    // dW[e,i,d] = sum_n dh[e,n,i] x[n,d]; loops (e, i, d, n).
    auto inputGrad = [&](Value dh) {
      return lb.generic1({dh, op.getX()},
                         lb.filled(op.getGate().getType().getShape(), 0.0),
                         {lb.map(4, {0, 3, 1}), lb.map(4, {3, 2}), lb.map(4, {0, 1, 2})},
                         lb.iters(3, 1), mac);
    };
    rw.replaceOp(op, {inputGrad(g.dhg), inputGrad(g.dhu), ddown});
    return success();
  }
};

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

void dsv3::lowering::populateMoELoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<LowerMoERouter, LowerMoEExperts, LowerMoEExpertsGradInput,
               LowerMoEExpertsGradWeight, LowerMoERouterGrad,
               LowerMoEBalanceLoss, LowerMoEBalanceLossGrad>(patterns.getContext());
}
