//===- Attention.cpp - lowering of dsv3.rope and dsv3.mla_core ------------===//
//
// Part of convert-dsv3-to-linalg. RoPE builds its cos/sin table in generated
// code (float32 angle = position * inv_freq, as the reference computes it)
// and rotates interleaved pairs. The MLA core and its gradient are runtime
// kernels (dsv3.ukernel): per (batch, head), two score GEMMs (the per-head
// "nope" part and the shared rope key), a causal softmax in scratch memory,
// and the probability-weighted sum of values.
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

/// The kernels' common operands: q/k/v, the segment ids (all zero, one
/// document per row, when the op has none) and the softmax scale.
SmallVector<Value> attentionOperands(OpBuilder &b, Location loc, Value qNope,
                                     Value qRope, Value kNope, Value kRope,
                                     Value v, Value segments, FloatAttr scale) {
  if (!segments) { // one document per row: segments are per key
    auto ks = cast<RankedTensorType>(kNope.getType()).getShape();
    segments = LinalgBuilder(b, loc).filledInt({ks[0], ks[1]}, 0);
  }
  Value s = arith::ConstantOp::create(b, loc, b.getF64FloatAttr(scale.getValueAsDouble()));
  return {qNope, qRope, kNope, kRope, v, segments, s};
}

/// dsv3.mla_core -> the attention kernel (runtime/kernels/Attention.cpp):
/// causal scores by row blocks through the GEMM microkernel, softmax and the
/// product with V per (batch, head), without a [B, H, T, T] tensor.
struct LowerMLACore : OpRewritePattern<MLACoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    SmallVector<Value> ins = attentionOperands(
        rw, loc, op.getQNope(), op.getQRope(), op.getKNope(), op.getKRope(),
        op.getV(), op.getSegmentIds(), op.getSoftmaxScaleAttr());
    rw.replaceOp(op, callUkernel(rw, loc, "dsv3rt_mla_attention", ins,
                                 op->getResultTypes()));
    return success();
  }
};

/// dsv3.mla_core_grad -> the attention gradient kernel, which recomputes the
/// probabilities per (batch, head).
struct LowerMLACoreGrad : OpRewritePattern<MLACoreGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreGradOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    SmallVector<Value> ins = attentionOperands(
        rw, loc, op.getQNope(), op.getQRope(), op.getKNope(), op.getKRope(),
        op.getV(), op.getSegmentIds(), op.getSoftmaxScaleAttr());
    ins.push_back(op.getDout());
    rw.replaceOp(op, callUkernel(rw, loc, "dsv3rt_mla_attention_grad", ins,
                                 op->getResultTypes()));
    return success();
  }
};

} // namespace

void dsv3::lowering::populateAttentionLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerPositions, LowerRope, LowerMLACore, LowerMLACoreGrad>(patterns.getContext());
}
