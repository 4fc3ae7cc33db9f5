//===- Attention.cpp - lowering of dsv3.rope and dsv3.mla_core ------------===//
//
// Part of convert-dsv3-to-linalg. RoPE builds its cos/sin table in generated
// code (float32 angle = position * inv_freq, as the reference computes it)
// and rotates interleaved pairs. The MLA core is two score contractions (the
// per-head "nope" part and the shared rope key), a causal softmax, and the
// probability-weighted sum of values.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"

using namespace mlir;
using namespace dsv3;
using namespace dsv3::lowering;

namespace {

/// dsv3.rope -> cos/sin table [T, R/2] and a rotation generic.
struct LowerRope : OpRewritePattern<RopeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RopeOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    auto shape = op.getX().getType().getShape();
    int64_t t = shape[1], half = shape[3] / 2;
    SmallVector<float> freq;
    for (double f : op.getInvFreq())
      freq.push_back(static_cast<float>(f));
    auto freqType = RankedTensorType::get({half}, rw.getF32Type());
    Value freqs = arith::ConstantOp::create(
        rw, loc, DenseElementsAttr::get(freqType, ArrayRef<float>(freq)));
    double scale = op.getAttentionScaling().convertToDouble();
    int64_t offset = op.getPositionOffset();
    // The transposed rotation (the gradient) turns by the opposite angle.
    bool transpose = op.getTranspose();
    SmallVector<Value> table = lb.generic(
        {freqs}, {lb.empty({t, half}), lb.empty({t, half})},
        {lb.map(2, {1}), lb.identity(2), lb.identity(2)}, lb.iters(2),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value pos = linalg::IndexOp::create(nb, l, 0);
          Value p = arith::AddIOp::create(nb, l, pos, indexConst(nb, l, offset));
          Value pf = arith::UIToFPOp::create(
              nb, l, nb.getF32Type(),
              arith::IndexCastUIOp::create(nb, l, nb.getI64Type(), p));
          Value angle = arith::MulFOp::create(nb, l, pf, a[0]);
          Value c = math::CosOp::create(nb, l, angle);
          Value s = math::SinOp::create(nb, l, angle);
          if (transpose)
            s = arith::NegFOp::create(nb, l, s);
          if (scale != 1.0) {
            c = arith::MulFOp::create(nb, l, c, f32Const(nb, l, scale));
            s = arith::MulFOp::create(nb, l, s, f32Const(nb, l, scale));
          }
          linalg::YieldOp::create(nb, l, ValueRange{c, s});
        });
    Value x = op.getX();
    Value y = lb.generic1(
        {}, lb.empty(shape), {lb.identity(4)}, lb.iters(4),
        [&](OpBuilder &nb, Location l, ValueRange) {
          Value ib = linalg::IndexOp::create(nb, l, 0);
          Value it = linalg::IndexOp::create(nb, l, 1);
          Value ih = linalg::IndexOp::create(nb, l, 2);
          Value ir = linalg::IndexOp::create(nb, l, 3);
          Value two = indexConst(nb, l, 2);
          Value pair = arith::DivUIOp::create(nb, l, ir, two);
          Value even = arith::MulIOp::create(nb, l, pair, two);
          Value odd = arith::AddIOp::create(nb, l, even, indexConst(nb, l, 1));
          Value x0 = tensor::ExtractOp::create(nb, l, x, ValueRange{ib, it, ih, even});
          Value x1 = tensor::ExtractOp::create(nb, l, x, ValueRange{ib, it, ih, odd});
          Value c = tensor::ExtractOp::create(nb, l, table[0], ValueRange{it, pair});
          Value s = tensor::ExtractOp::create(nb, l, table[1], ValueRange{it, pair});
          // even: x0 c - x1 s ; odd: x1 c + x0 s
          Value isEven = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq,
                                               ir, even);
          Value self = arith::SelectOp::create(nb, l, isEven, x0, x1);
          Value other = arith::SelectOp::create(nb, l, isEven,
                                                arith::NegFOp::create(nb, l, x1), x0);
          Value r = arith::AddFOp::create(nb, l, arith::MulFOp::create(nb, l, self, c),
                                          arith::MulFOp::create(nb, l, other, s));
          linalg::YieldOp::create(nb, l, ValueRange{r});
        });
    rw.replaceOp(op, y);
    return success();
  }
};

/// Causal attention probabilities p[b,h,t,u] of dsv3.mla_core's operands:
/// softmax over u <= t (and, with `segments`, u in t's document) of
/// scale * (q_nope.k_nope + q_rope.k_rope).
Value attentionProbs(LinalgBuilder &lb, Value qNope, Value qRope, Value kNope,
                     Value kRope, Value segments, double scale) {
  auto qs = cast<RankedTensorType>(qNope.getType()).getShape();
  int64_t bs = qs[0], t = qs[1], h = qs[2];
  auto contract = LinalgBuilder::multiplyAccumulate;
  // Loops (b, h, t, u, d): q[b,t,h,d] . k[b,u,h,d] -> s[b,h,t,u].
  Value scores = lb.generic1(
      {qNope, kNope}, lb.filled({bs, h, t, t}, 0.0),
      {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 1, 4}), lb.map(5, {0, 1, 2, 3})},
      lb.iters(4, 1), contract);
  // The rope key is shared by all heads: k_rope[b,u,r].
  scores = lb.generic1(
      {qRope, kRope}, scores,
      {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 4}), lb.map(5, {0, 1, 2, 3})},
      lb.iters(4, 1), contract);

  // Scaled logit, or -inf where masked.
  auto masked = [scale, segments](OpBuilder &nb, Location l, Value s) {
    Value t = linalg::IndexOp::create(nb, l, 2);
    Value u = linalg::IndexOp::create(nb, l, 3);
    Value visible = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ule, u, t);
    if (segments) {
      Value b = linalg::IndexOp::create(nb, l, 0);
      Value st = tensor::ExtractOp::create(nb, l, segments, ValueRange{b, t});
      Value su = tensor::ExtractOp::create(nb, l, segments, ValueRange{b, u});
      Value same = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, st, su);
      visible = arith::AndIOp::create(nb, l, visible, same);
    }
    Value scaled = arith::MulFOp::create(nb, l, s, f32Const(nb, l, scale));
    return arith::SelectOp::create(nb, l, visible, scaled,
                                   f32Const(nb, l, -INFINITY))
        .getResult();
  };
  auto rowMaps = SmallVector<AffineMap>{lb.identity(4), lb.map(4, {0, 1, 2})};
  Value mx = lb.generic1(
      {scores}, lb.filled({bs, h, t}, -INFINITY), rowMaps, lb.iters(3, 1),
      [&](OpBuilder &nb, Location l, ValueRange a) {
        linalg::YieldOp::create(
            nb, l, ValueRange{arith::MaximumFOp::create(nb, l, masked(nb, l, a[0]), a[1])});
      });
  Value ex = lb.generic1(
      {scores, mx}, lb.empty({bs, h, t, t}),
      {lb.identity(4), lb.map(4, {0, 1, 2}), lb.identity(4)}, lb.iters(4),
      [&](OpBuilder &nb, Location l, ValueRange a) {
        Value d = arith::SubFOp::create(nb, l, masked(nb, l, a[0]), a[1]);
        linalg::YieldOp::create(nb, l, ValueRange{math::ExpOp::create(nb, l, d)});
      });
  Value sum = lb.generic1(
      {ex}, lb.filled({bs, h, t}, 0.0), rowMaps, lb.iters(3, 1),
      [](OpBuilder &nb, Location l, ValueRange a) {
        linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[1], a[0])});
      });
  return lb.generic1(
      {ex, sum}, lb.empty({bs, h, t, t}),
      {lb.identity(4), lb.map(4, {0, 1, 2}), lb.identity(4)}, lb.iters(4),
      [](OpBuilder &nb, Location l, ValueRange a) {
        linalg::YieldOp::create(nb, l, ValueRange{arith::DivFOp::create(nb, l, a[0], a[1])});
      });
}

/// dsv3.mla_core -> probabilities, then out[b,t,h,e] = sum_u p v.
struct LowerMLACore : OpRewritePattern<MLACoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value probs = attentionProbs(lb, op.getQNope(), op.getQRope(), op.getKNope(),
                                 op.getKRope(), op.getSegmentIds(),
                                 op.getSoftmaxScale().convertToDouble());
    auto vs = op.getV().getType().getShape();
    // Loops (b, t, h, e, u): p[b,h,t,u] * v[b,u,h,e] -> o[b,t,h,e].
    Value out = lb.generic1(
        {probs, op.getV()}, lb.filled(vs, 0.0),
        {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 4, 2, 3}), lb.map(5, {0, 1, 2, 3})},
        lb.iters(4, 1), LinalgBuilder::multiplyAccumulate);
    rw.replaceOp(op, out);
    return success();
  }
};

/// dsv3.mla_core_grad -> recomputed probabilities, then the softmax and
/// contraction gradients.
struct LowerMLACoreGrad : OpRewritePattern<MLACoreGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreGradOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    double scale = op.getSoftmaxScale().convertToDouble();
    Value qn = op.getQNope(), qr = op.getQRope(), kn = op.getKNope(),
          kr = op.getKRope(), v = op.getV(), dout = op.getDout();
    Value p = attentionProbs(lb, qn, qr, kn, kr, op.getSegmentIds(), scale);
    auto qs = op.getQNope().getType().getShape();
    int64_t bs = qs[0], t = qs[1], h = qs[2];
    auto mac = LinalgBuilder::multiplyAccumulate;
    auto zerosLike = [&](Value x) {
      return lb.filled(cast<RankedTensorType>(x.getType()).getShape(), 0.0);
    };
    // dv[b,u,h,e] = sum_t p[b,h,t,u] dout[b,t,h,e]; loops (b,u,h,e,t).
    Value dv = lb.generic1({p, dout}, zerosLike(v),
                           {lb.map(5, {0, 2, 4, 1}), lb.map(5, {0, 4, 2, 3}),
                            lb.map(5, {0, 1, 2, 3})},
                           lb.iters(4, 1), mac);
    // dp[b,h,t,u] = sum_e dout[b,t,h,e] v[b,u,h,e]; loops (b,h,t,u,e).
    Value dp = lb.generic1({dout, v}, lb.filled({bs, h, t, t}, 0.0),
                           {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 1, 4}),
                            lb.map(5, {0, 1, 2, 3})},
                           lb.iters(4, 1), mac);
    Value rowDot = lb.generic1({p, dp}, lb.filled({bs, h, t}, 0.0),
                               {lb.identity(4), lb.identity(4), lb.map(4, {0, 1, 2})},
                               lb.iters(3, 1), mac);
    // ds = scale * p * (dp - rowDot): gradient of the unscaled scores.
    Value ds = lb.generic1(
        {p, dp, rowDot}, lb.empty({bs, h, t, t}),
        {lb.identity(4), lb.identity(4), lb.map(4, {0, 1, 2}), lb.identity(4)},
        lb.iters(4), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value d = arith::SubFOp::create(nb, l, a[1], a[2]);
          Value g = arith::MulFOp::create(nb, l, a[0], d);
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::MulFOp::create(nb, l, g, f32Const(nb, l, scale))});
        });
    // dq_nope[b,t,h,d] = sum_u ds[b,h,t,u] k_nope[b,u,h,d]; loops (b,t,h,d,u).
    Value dqn = lb.generic1({ds, kn}, zerosLike(qn),
                            {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 4, 2, 3}),
                             lb.map(5, {0, 1, 2, 3})},
                            lb.iters(4, 1), mac);
    // dk_nope[b,u,h,d] = sum_t ds[b,h,t,u] q_nope[b,t,h,d]; loops (b,u,h,d,t).
    Value dkn = lb.generic1({ds, qn}, zerosLike(kn),
                            {lb.map(5, {0, 2, 4, 1}), lb.map(5, {0, 4, 2, 3}),
                             lb.map(5, {0, 1, 2, 3})},
                            lb.iters(4, 1), mac);
    // dq_rope[b,t,h,r] = sum_u ds[b,h,t,u] k_rope[b,u,r]; loops (b,t,h,r,u).
    Value dqr = lb.generic1({ds, kr}, zerosLike(qr),
                            {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 4, 3}),
                             lb.map(5, {0, 1, 2, 3})},
                            lb.iters(4, 1), mac);
    // dk_rope[b,u,r] = sum_{t,h} ds[b,h,t,u] q_rope[b,t,h,r]; loops (b,u,r,t,h).
    Value dkr = lb.generic1({ds, qr}, zerosLike(kr),
                            {lb.map(5, {0, 4, 3, 1}), lb.map(5, {0, 3, 4, 2}),
                             lb.map(5, {0, 1, 2})},
                            lb.iters(3, 2), mac);
    rw.replaceOp(op, {dqn, dqr, dkn, dkr, dv});
    return success();
  }
};

} // namespace

void dsv3::lowering::populateAttentionLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerRope, LowerMLACore, LowerMLACoreGrad>(patterns.getContext());
}
