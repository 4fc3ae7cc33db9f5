//===- DSV3ToLinalg.cpp - convert-dsv3-to-linalg: pass and common ops -----===//
//
// The pass driver plus the lowering of the ops every layer uses: dsv3.linear
// (a tagged GEMM generic), dsv3.rms_norm, dsv3.swiglu, dsv3.embedding and
// dsv3.cross_entropy. Attention ops are in Attention.cpp, routing and experts
// in MoE.cpp. Runs after dsv3-decompose, before dsv3-materialize-params.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"
#include "lowering/Passes.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace dsv3 {
#define GEN_PASS_DEF_CONVERTDSV3TOLINALGPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;
using namespace dsv3::lowering;

//===----------------------------------------------------------------------===//
// Shared helpers
//===----------------------------------------------------------------------===//

Value LinalgBuilder::matmulNT(Value a, Value bT) {
  int64_t m = cast<RankedTensorType>(a.getType()).getDimSize(0);
  int64_t n = cast<RankedTensorType>(bT.getType()).getDimSize(0);
  Value acc = filled({m, n}, 0.0);
  return generic1(
      {a, bT}, acc, {map(3, {0, 2}), map(3, {1, 2}), map(3, {0, 1})},
      iters(2, 1),
      [](OpBuilder &nb, Location l, ValueRange args) {
        Value mul = arith::MulFOp::create(nb, l, args[0], args[1]);
        linalg::YieldOp::create(nb, l,
                                ValueRange{arith::AddFOp::create(nb, l, args[2], mul)});
      },
      {b.getNamedAttr(kMatmulNTAttr, b.getUnitAttr())});
}

Value dsv3::lowering::clampedIndex(OpBuilder &b, Location loc, Value id,
                                   int64_t size) {
  Value lo = arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(0));
  Value hi = arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(size - 1));
  Value c = arith::MinSIOp::create(b, loc, arith::MaxSIOp::create(b, loc, id, lo),
                                   hi);
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), c);
}

Value dsv3::lowering::sigmoid(OpBuilder &b, Location loc, Value x) {
  Value one = f32Const(b, loc, 1.0);
  Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
  return arith::DivFOp::create(b, loc, one, arith::AddFOp::create(b, loc, one, e));
}

namespace {

//===----------------------------------------------------------------------===//
// Patterns
//===----------------------------------------------------------------------===//

/// dsv3.linear -> collapse to 2-D, tagged GEMM generic, expand back.
struct LowerLinear : OpRewritePattern<LinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto xType = op.getX().getType();
    if (xType.getRank() < 2)
      return rw.notifyMatchFailure(op, "rank-1 input");
    Value y = lb.matmulNT(lb.collapseTo2D(op.getX()), op.getWeight());
    rw.replaceOp(op, lb.expandLike(y, xType,
                                   op.getWeight().getType().getDimSize(0)));
    return success();
  }
};

/// dsv3.rms_norm -> sum-of-squares reduction, then x * rsqrt(ss/D + eps) * w.
struct LowerRMSNorm : OpRewritePattern<RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RMSNormOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto xType = op.getX().getType();
    Value x = xType.getRank() == 1
                  ? tensor::ExpandShapeOp::create(
                        rw, op.getLoc(),
                        RankedTensorType::get({1, xType.getDimSize(0)},
                                              rw.getF32Type()),
                        op.getX(), SmallVector<ReassociationIndices>{{0, 1}})
                        .getResult()
                  : lb.collapseTo2D(op.getX());
    auto shape = cast<RankedTensorType>(x.getType()).getShape();
    int64_t m = shape[0], d = shape[1];
    Value ss = lb.generic1({x}, lb.filled({m}, 0.0),
                           {lb.map(2, {0, 1}), lb.map(2, {0})}, lb.iters(1, 1),
                           [](OpBuilder &nb, Location l, ValueRange a) {
                             Value sq = arith::MulFOp::create(nb, l, a[0], a[0]);
                             linalg::YieldOp::create(
                                 nb, l, ValueRange{arith::AddFOp::create(nb, l, a[1], sq)});
                           });
    double eps = op.getEpsilon().convertToDouble();
    Value y = lb.generic1(
        {x, ss, op.getWeight()}, lb.empty({m, d}),
        {lb.identity(2), lb.map(2, {0}), lb.map(2, {1}), lb.identity(2)},
        lb.iters(2), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value mean = arith::DivFOp::create(nb, l, a[1], f32Const(nb, l, d));
          Value r = math::RsqrtOp::create(
              nb, l, arith::AddFOp::create(nb, l, mean, f32Const(nb, l, eps)));
          Value v = arith::MulFOp::create(nb, l, a[0], r);
          linalg::YieldOp::create(nb, l, ValueRange{arith::MulFOp::create(nb, l, v, a[2])});
        });
    if (xType.getRank() == 1)
      y = tensor::CollapseShapeOp::create(
          rw, op.getLoc(), y, SmallVector<ReassociationIndices>{{0, 1}});
    else
      y = lb.expandLike(y, xType, d);
    rw.replaceOp(op, y);
    return success();
  }
};

/// dsv3.swiglu -> elementwise silu(gate) * up.
struct LowerSwiGLU : OpRewritePattern<SwiGLUOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SwiGLUOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto type = op.getGate().getType();
    unsigned rank = type.getRank();
    Value y = lb.generic1(
        {op.getGate(), op.getUp()}, lb.empty(type.getShape()),
        {lb.identity(rank), lb.identity(rank), lb.identity(rank)},
        lb.iters(rank), [](OpBuilder &nb, Location l, ValueRange a) {
          Value silu = arith::MulFOp::create(nb, l, a[0], sigmoid(nb, l, a[0]));
          linalg::YieldOp::create(nb, l, ValueRange{arith::MulFOp::create(nb, l, silu, a[1])});
        });
    rw.replaceOp(op, y);
    return success();
  }
};

/// dsv3.embedding -> gather generic reading the table row of each id.
struct LowerEmbedding : OpRewritePattern<EmbeddingOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(EmbeddingOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value table = op.getTable();
    int64_t vocab = op.getTable().getType().getDimSize(0);
    Value y = lb.generic1(
        {op.getIds()}, lb.empty(op.getType().getShape()),
        {lb.map(3, {0, 1}), lb.identity(3)}, lb.iters(3),
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value row = clampedIndex(nb, l, a[0], vocab);
          Value col = linalg::IndexOp::create(nb, l, 2);
          linalg::YieldOp::create(
              nb, l, ValueRange{tensor::ExtractOp::create(nb, l, table, ValueRange{row, col})});
        });
    rw.replaceOp(op, y);
    return success();
  }
};

/// dsv3.cross_entropy -> row max, sum of exp, per-token NLL, mean.
struct LowerCrossEntropy : OpRewritePattern<CrossEntropyOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CrossEntropyOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value logits = op.getLogits();
    auto s = op.getLogits().getType().getShape();
    int64_t bs = s[0], ts = s[1], vocab = s[2];
    auto rowMaps = SmallVector<AffineMap>{lb.identity(3), lb.map(3, {0, 1})};
    Value mx = lb.generic1(
        {logits}, lb.filled({bs, ts}, -INFINITY), rowMaps, lb.iters(2, 1),
        [](OpBuilder &nb, Location l, ValueRange a) {
          linalg::YieldOp::create(nb, l, ValueRange{arith::MaximumFOp::create(nb, l, a[0], a[1])});
        });
    Value sum = lb.generic1(
        {logits, mx}, lb.filled({bs, ts}, 0.0),
        {lb.identity(3), lb.map(3, {0, 1}), lb.map(3, {0, 1})}, lb.iters(2, 1),
        [](OpBuilder &nb, Location l, ValueRange a) {
          Value e = math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, a[0], a[1]));
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[2], e)});
        });
    Value nll = lb.generic1(
        {mx, sum, op.getLabels()}, lb.empty({bs, ts}),
        {lb.identity(2), lb.identity(2), lb.identity(2), lb.identity(2)},
        lb.iters(2), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value b = linalg::IndexOp::create(nb, l, 0);
          Value t = linalg::IndexOp::create(nb, l, 1);
          Value label = clampedIndex(nb, l, a[2], vocab);
          Value picked =
              tensor::ExtractOp::create(nb, l, logits, ValueRange{b, t, label});
          Value lse = arith::AddFOp::create(nb, l, a[0], math::LogOp::create(nb, l, a[1]));
          linalg::YieldOp::create(nb, l, ValueRange{arith::SubFOp::create(nb, l, lse, picked)});
        });
    Value total = lb.generic1(
        {nll}, lb.filled({}, 0.0),
        {lb.identity(2), AffineMap::get(2, 0, {}, rw.getContext())},
        lb.iters(0, 2), [](OpBuilder &nb, Location l, ValueRange a) {
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[1], a[0])});
        });
    Value mean = lb.generic1(
        {total}, lb.empty({}),
        {AffineMap::get(0, 0, {}, rw.getContext()),
         AffineMap::get(0, 0, {}, rw.getContext())},
        {}, [&](OpBuilder &nb, Location l, ValueRange a) {
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::DivFOp::create(nb, l, a[0],
                                                   f32Const(nb, l, bs * ts))});
        });
    rw.replaceOp(op, mean);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Pass
//===----------------------------------------------------------------------===//

struct ConvertDSV3ToLinalgPass
    : dsv3::impl::ConvertDSV3ToLinalgPassBase<ConvertDSV3ToLinalgPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateCommonLoweringPatterns(patterns);
    populateAttentionLoweringPatterns(patterns);
    populateMoELoweringPatterns(patterns);
    GreedyRewriteConfig config;
    config.enableFolding(false);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns),
                                     config)))
      return signalPassFailure();
    // Everything but parameters must be gone; a leftover op means a missing
    // decomposition, which must not reach the JIT silently.
    WalkResult r = getOperation()->walk([](Operation *op) {
      if (isa<DSV3Dialect>(op->getDialect()) && !isa<ParamOp>(op)) {
        op->emitOpError() << "has no lowering to linalg (run dsv3-decompose first)";
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace

void dsv3::lowering::populateCommonLoweringPatterns(RewritePatternSet &patterns) {
  patterns.add<LowerLinear, LowerRMSNorm, LowerSwiGLU, LowerEmbedding,
               LowerCrossEntropy>(patterns.getContext());
}
