//===- Attention.cpp - lowering of dsv3.rope and dsv3.mla_core ------------===//
//
// Part of convert-dsv3-to-linalg (also dsv3.mla_absorbed_core, the decode
// form over a latent cache). RoPE builds its cos/sin table in generated
// code (float32 angle = position * inv_freq, as the reference computes it)
// and rotates interleaved pairs. The MLA core and its gradient are written
// as the textbook computation over a materialised [B, H, Tq, Tk] score
// tensor: the reference that a target's attention kernel must reproduce
// (the CPU pipeline selects runtime/kernels/Attention.cpp instead).
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"

using namespace mlir;
using namespace dsv3;
using namespace dsv3::lowering;

namespace {

/// dsv3.positions -> offset + t.
struct LowerPositions : OpRewritePattern<PositionsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(PositionsOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    auto type = op.getResult().getType();
    int64_t offset = op.getOffset();
    Value p = lb.generic1(
        {}, tensor::EmptyOp::create(rw, loc, type.getShape(), type.getElementType()),
        {lb.identity(2)}, lb.iters(2), [&](OpBuilder &nb, Location l, ValueRange) {
          Value t = arith::AddIOp::create(nb, l, linalg::IndexOp::create(nb, l, 1),
                                          indexConst(nb, l, offset));
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::IndexCastUIOp::create(nb, l, nb.getI64Type(), t)});
        });
    rw.replaceOp(op, p);
    return success();
  }
};

/// dsv3.rope -> cos/sin table [B, T, R/2] from the positions and a rotation
/// generic.
struct LowerRope : OpRewritePattern<RopeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RopeOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    auto shape = op.getX().getType().getShape();
    int64_t batch = shape[0], t = shape[1], half = shape[3] / 2;
    SmallVector<float> freq;
    for (double f : op.getInvFreq())
      freq.push_back(static_cast<float>(f));
    auto freqType = RankedTensorType::get({half}, rw.getF32Type());
    Value freqs = arith::ConstantOp::create(
        rw, loc, DenseElementsAttr::get(freqType, ArrayRef<float>(freq)));
    double scale = op.getAttentionScaling().convertToDouble();
    // The transposed rotation (the gradient) turns by the opposite angle.
    bool transpose = op.getTranspose();
    SmallVector<Value> table = lb.generic(
        {op.getPositions(), freqs}, {lb.empty({batch, t, half}), lb.empty({batch, t, half})},
        {lb.map(3, {0, 1}), lb.map(3, {2}), lb.identity(3), lb.identity(3)}, lb.iters(3),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          // Signed: a negative (padding) position must not become ~1.8e19.
          Value pf = arith::SIToFPOp::create(nb, l, nb.getF32Type(), a[0]);
          Value angle = arith::MulFOp::create(nb, l, pf, a[1]);
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
          Value c = tensor::ExtractOp::create(nb, l, table[0], ValueRange{ib, it, pair});
          Value s = tensor::ExtractOp::create(nb, l, table[1], ValueRange{ib, it, pair});
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

/// The operands both MLA core ops share.
struct AttentionOperands {
  Value qNope, qRope, kNope, kRope, v, segments;
  double scale;
  /// Of dsv3.mla_core or dsv3.mla_core_grad.
  template <class Op> static AttentionOperands of(Op op) {
    return {op.getQNope(), op.getQRope(), op.getKNope(), op.getKRope(),
            op.getV(),     op.getSegmentIds(), op.getSoftmaxScale().convertToDouble()};
  }
};

/// Row softmax over the last dimension of masked scores [B, H, Tq, Tk]
/// (masked entries are -inf).
Value softmaxRows(LinalgBuilder &lb, Value masked) {
  auto scoreShape = cast<RankedTensorType>(masked.getType()).getShape();
  int64_t batch = scoreShape[0], heads = scoreShape[1], tq = scoreShape[2];
  SmallVector<AffineMap> rowMaps = {lb.identity(4), lb.map(4, {0, 1, 2})};
  Value rowMax = lb.generic1({masked}, lb.filled({batch, heads, tq}, -INFINITY), rowMaps,
                             lb.iters(3, 1), [](OpBuilder &nb, Location l, ValueRange a) {
                               linalg::YieldOp::create(
                                   nb, l, ValueRange{arith::MaximumFOp::create(nb, l, a[0], a[1])});
                             });
  Value e = lb.generic1({masked, rowMax}, lb.empty(scoreShape),
                        {lb.identity(4), lb.map(4, {0, 1, 2}), lb.identity(4)}, lb.iters(4),
                        [](OpBuilder &nb, Location l, ValueRange a) {
                          linalg::YieldOp::create(
                              nb, l,
                              ValueRange{math::ExpOp::create(
                                  nb, l, arith::SubFOp::create(nb, l, a[0], a[1]))});
                        });
  Value rowSum = lb.generic1({e}, lb.filled({batch, heads, tq}, 0.0), rowMaps, lb.iters(3, 1),
                             [](OpBuilder &nb, Location l, ValueRange a) {
                               linalg::YieldOp::create(
                                   nb, l, ValueRange{arith::AddFOp::create(nb, l, a[1], a[0])});
                             });
  return lb.generic1({e, rowSum}, lb.empty(scoreShape),
                     {lb.identity(4), lb.map(4, {0, 1, 2}), lb.identity(4)}, lb.iters(4),
                     [](OpBuilder &nb, Location l, ValueRange a) {
                       linalg::YieldOp::create(
                           nb, l, ValueRange{arith::DivFOp::create(nb, l, a[0], a[1])});
                     });
}

/// Softmax probabilities P [B, H, Tq, Tk] of the causal (and, with segment
/// ids, per-document) scores: query i sits at position prefix + i and sees
/// the keys u <= prefix + i of its own segment.
Value attentionProbabilities(LinalgBuilder &lb, const AttentionOperands &in) {
  auto qs = cast<RankedTensorType>(in.qNope.getType()).getShape();
  int64_t batch = qs[0], tq = qs[1], heads = qs[2];
  int64_t tk = cast<RankedTensorType>(in.kNope.getType()).getDimSize(1);
  int64_t prefix = tk - tq;
  SmallVector<int64_t> scoreShape = {batch, heads, tq, tk};
  // Loops (b, h, i, u, d): the nope part, then the shared rope key added on.
  Value scores = lb.generic1({in.qNope, in.kNope}, lb.filled(scoreShape, 0.0),
                             {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 1, 4}),
                              lb.map(5, {0, 1, 2, 3})},
                             lb.iters(4, 1), LinalgBuilder::multiplyAccumulate);
  scores = lb.generic1({in.qRope, in.kRope}, scores,
                       {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 4}), lb.map(5, {0, 1, 2, 3})},
                       lb.iters(4, 1), LinalgBuilder::multiplyAccumulate);
  Value segments = in.segments;
  double scale = in.scale;
  Value masked = lb.generic1(
      {scores}, lb.empty(scoreShape), {lb.identity(4), lb.identity(4)}, lb.iters(4),
      [&](OpBuilder &nb, Location l, ValueRange a) {
        Value b = linalg::IndexOp::create(nb, l, 0);
        Value t = arith::AddIOp::create(nb, l, linalg::IndexOp::create(nb, l, 2),
                                        indexConst(nb, l, prefix));
        Value u = linalg::IndexOp::create(nb, l, 3);
        Value allowed = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ule, u, t);
        if (segments) {
          Value su = tensor::ExtractOp::create(nb, l, segments, ValueRange{b, u});
          Value st = tensor::ExtractOp::create(nb, l, segments, ValueRange{b, t});
          allowed = arith::AndIOp::create(
              nb, l, allowed, arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, su, st));
        }
        Value s = arith::MulFOp::create(nb, l, a[0], f32Const(nb, l, scale));
        linalg::YieldOp::create(
            nb, l, ValueRange{arith::SelectOp::create(nb, l, allowed, s,
                                                      f32Const(nb, l, -INFINITY))});
      });
  return softmaxRows(lb, masked);
}

/// dsv3.mla_core -> the probabilities and their product with V. The
/// reference materialises [B, H, Tq, Tk]; the CPU pipeline selects the
/// blocked attention kernel instead (lowering/CPU/SelectUkernels.cpp).
struct LowerMLACore : OpRewritePattern<MLACoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreOp op, PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    AttentionOperands in = AttentionOperands::of(op);
    Value p = attentionProbabilities(lb, in);
    // Loops (b, i, h, dv, u).
    rw.replaceOp(op, lb.generic1({p, in.v}, lb.filled(op.getType().getShape(), 0.0),
                                 {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 4, 2, 3}),
                                  lb.map(5, {0, 1, 2, 3})},
                                 lb.iters(4, 1), LinalgBuilder::multiplyAccumulate));
    return success();
  }
};

/// dsv3.mla_core_grad -> the softmax backward on the recomputed P:
/// dV = P^T dO, dP = dO V^T, dS = scale * P (dP - rowsum(P dP)), then dS
/// against the keys (dq) and the queries (dk; the shared rope key sums
/// over heads).
struct LowerMLACoreGrad : OpRewritePattern<MLACoreGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreGradOp op, PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    AttentionOperands in = AttentionOperands::of(op);
    Value p = attentionProbabilities(lb, in);
    auto pShape = cast<RankedTensorType>(p.getType()).getShape();
    Value dout = op.getDout();
    auto zeros = [&](Value like) {
      return lb.filled(cast<RankedTensorType>(like.getType()).getShape(), 0.0);
    };
    auto mac = LinalgBuilder::multiplyAccumulate;
    // dV[b,u,h,dv] = sum_i P[b,h,i,u] dO[b,i,h,dv]: loops (b, u, h, dv, i).
    Value dv = lb.generic1({p, dout}, zeros(in.v),
                           {lb.map(5, {0, 2, 4, 1}), lb.map(5, {0, 4, 2, 3}), lb.map(5, {0, 1, 2, 3})},
                           lb.iters(4, 1), mac);
    // dP[b,h,i,u] = sum_dv dO[b,i,h,dv] V[b,u,h,dv]: loops (b, h, i, u, dv).
    Value dp = lb.generic1({dout, in.v}, lb.filled(pShape, 0.0),
                           {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 1, 4}), lb.map(5, {0, 1, 2, 3})},
                           lb.iters(4, 1), mac);
    Value rowDot = lb.generic1({p, dp}, lb.filled({pShape[0], pShape[1], pShape[2]}, 0.0),
                               {lb.identity(4), lb.identity(4), lb.map(4, {0, 1, 2})},
                               lb.iters(3, 1), mac);
    double scale = in.scale;
    Value ds = lb.generic1(
        {p, dp, rowDot}, lb.empty(pShape),
        {lb.identity(4), lb.identity(4), lb.map(4, {0, 1, 2}), lb.identity(4)}, lb.iters(4),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value centred = arith::SubFOp::create(nb, l, a[1], a[2]);
          Value g = arith::MulFOp::create(nb, l, a[0], centred);
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::MulFOp::create(nb, l, g, f32Const(nb, l, scale))});
        });
    // dq[b,i,h,d] = sum_u dS[b,h,i,u] k[b,u,h,d]: loops (b, i, h, d, u).
    Value dqNope = lb.generic1({ds, in.kNope}, zeros(in.qNope),
                               {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 4, 2, 3}), lb.map(5, {0, 1, 2, 3})},
                               lb.iters(4, 1), mac);
    Value dqRope = lb.generic1({ds, in.kRope}, zeros(in.qRope),
                               {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 4, 3}), lb.map(5, {0, 1, 2, 3})},
                               lb.iters(4, 1), mac);
    // dk[b,u,h,d] = sum_i dS[b,h,i,u] q[b,i,h,d]: loops (b, u, h, d, i).
    Value dkNope = lb.generic1({ds, in.qNope}, zeros(in.kNope),
                               {lb.map(5, {0, 2, 4, 1}), lb.map(5, {0, 4, 2, 3}), lb.map(5, {0, 1, 2, 3})},
                               lb.iters(4, 1), mac);
    // dk_rope[b,u,r] = sum_{h,i} dS[b,h,i,u] q_rope[b,i,h,r]: loops (b, u, r, h, i).
    Value dkRope = lb.generic1({ds, in.qRope}, zeros(in.kRope),
                               {lb.map(5, {0, 3, 4, 1}), lb.map(5, {0, 4, 3, 2}), lb.map(5, {0, 1, 2})},
                               lb.iters(3, 2), mac);
    rw.replaceOp(op, {dqNope, dqRope, dkNope, dkRope, dv});
    return success();
  }
};


/// dsv3.mla_absorbed_core, as the textbook computation: the keys are the
/// cache rows followed by the new rows ([B, S+T, C+R], S the capacity),
/// masked to the cached prefix (u < positions[b,0]) and the new rows up to
/// the query; q̂ = W_UKᵀ q_nope scores against the latent part, q_rope
/// against the rope part, and W_UV maps the attended latent back.
struct LowerMLAAbsorbedCore : OpRewritePattern<MLAAbsorbedCoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLAAbsorbedCoreOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    auto mac = LinalgBuilder::multiplyAccumulate;
    auto qs = op.getQNope().getType().getShape();
    auto cs = op.getCache().getType().getShape();
    int64_t batch = qs[0], t = qs[1], heads = qs[2], capacity = cs[1], width = cs[2];
    int64_t latent = op.getWUk().getType().getDimSize(2), keys = capacity + t;
    // q̂[b,i,h,c] = sum_d q_nope[b,i,h,d] w_uk[h,d,c]: loops (b, i, h, c, d).
    Value qHat = lb.generic1({op.getQNope(), op.getWUk()}, lb.filled({batch, t, heads, latent}, 0.0),
                             {lb.map(5, {0, 1, 2, 4}), lb.map(5, {2, 4, 3}), lb.map(5, {0, 1, 2, 3})},
                             lb.iters(4, 1), mac);
    // keys [B, S+T, C+R] = cache (widened to float32) ++ rows.
    Value cache = op.getCache();
    if (!op.getCache().getType().getElementType().isF32())
      cache = lb.generic1({cache}, lb.empty({batch, capacity, width}),
                          {lb.identity(3), lb.identity(3)}, lb.iters(3),
                          [](OpBuilder &nb, Location l, ValueRange a) {
                            linalg::YieldOp::create(
                                nb, l, ValueRange{arith::ExtFOp::create(nb, l, nb.getF32Type(), a[0])});
                          });
    SmallVector<OpFoldResult> offsets(3, rw.getIndexAttr(0)), strides(3, rw.getIndexAttr(1));
    SmallVector<OpFoldResult> sizes = {rw.getIndexAttr(batch), rw.getIndexAttr(capacity),
                                       rw.getIndexAttr(width)};
    Value all = tensor::InsertSliceOp::create(rw, loc, cache, lb.empty({batch, keys, width}),
                                              offsets, sizes, strides);
    offsets[1] = rw.getIndexAttr(capacity);
    sizes[1] = rw.getIndexAttr(t);
    all = tensor::InsertSliceOp::create(rw, loc, op.getRows(), all, offsets, sizes, strides);
    auto part = [&](int64_t from, int64_t size) -> Value {
      SmallVector<OpFoldResult> o = {rw.getIndexAttr(0), rw.getIndexAttr(0), rw.getIndexAttr(from)};
      SmallVector<OpFoldResult> z = {rw.getIndexAttr(batch), rw.getIndexAttr(keys),
                                     rw.getIndexAttr(size)};
      return tensor::ExtractSliceOp::create(rw, loc, all, o, z, strides);
    };
    Value kLatent = part(0, latent), kRope = part(latent, width - latent);
    SmallVector<int64_t> scoreShape = {batch, heads, t, keys};
    // Loops (b, h, i, u, c).
    Value scores = lb.generic1({qHat, kLatent}, lb.filled(scoreShape, 0.0),
                               {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 4}), lb.map(5, {0, 1, 2, 3})},
                               lb.iters(4, 1), mac);
    scores = lb.generic1({op.getQRope(), kRope}, scores,
                         {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 3, 4}), lb.map(5, {0, 1, 2, 3})},
                         lb.iters(4, 1), mac);
    Value positions = op.getPositions();
    double scale = op.getSoftmaxScale().convertToDouble();
    Value masked = lb.generic1(
        {scores}, lb.empty(scoreShape), {lb.identity(4), lb.identity(4)}, lb.iters(4),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value b = linalg::IndexOp::create(nb, l, 0);
          Value i = linalg::IndexOp::create(nb, l, 2);
          Value u = linalg::IndexOp::create(nb, l, 3);
          Value cached = arith::IndexCastOp::create(
              nb, l, nb.getIndexType(),
              tensor::ExtractOp::create(nb, l, positions, ValueRange{b, indexConst(nb, l, 0)}));
          Value s = indexConst(nb, l, capacity);
          Value inCache = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ult, u, s);
          Value prefix = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::slt, u, cached);
          Value fresh = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ule,
                                              arith::SubIOp::create(nb, l, u, s), i);
          Value allowed = arith::SelectOp::create(nb, l, inCache, prefix, fresh);
          Value scaled = arith::MulFOp::create(nb, l, a[0], f32Const(nb, l, scale));
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::SelectOp::create(nb, l, allowed, scaled,
                                                        f32Const(nb, l, -INFINITY))});
        });
    Value p = softmaxRows(lb, masked);
    // ô[b,i,h,c] = sum_u P[b,h,i,u] k_latent[b,u,c]: loops (b, i, h, c, u).
    Value attended = lb.generic1({p, kLatent}, lb.filled({batch, t, heads, latent}, 0.0),
                                 {lb.map(5, {0, 2, 1, 4}), lb.map(5, {0, 4, 3}), lb.map(5, {0, 1, 2, 3})},
                                 lb.iters(4, 1), mac);
    // out[b,i,h,v] = sum_c ô[b,i,h,c] w_uv[h,v,c]: loops (b, i, h, v, c).
    rw.replaceOp(op, lb.generic1({attended, op.getWUv()}, lb.filled(op.getType().getShape(), 0.0),
                                 {lb.map(5, {0, 1, 2, 4}), lb.map(5, {2, 3, 4}), lb.map(5, {0, 1, 2, 3})},
                                 lb.iters(4, 1), mac));
    return success();
  }
};

} // namespace

void dsv3::lowering::populateAttentionLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerPositions, LowerRope, LowerMLACore, LowerMLACoreGrad, LowerMLAAbsorbedCore>(patterns.getContext());
}
