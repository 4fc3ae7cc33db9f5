//===- DSV3ToLinalg.cpp - convert-dsv3-to-linalg: pass and common ops -----===//
//
// The pass driver plus the lowering of the ops every layer uses: dsv3.linear
// (a GEMM generic), dsv3.rms_norm, dsv3.swiglu, dsv3.embedding and
// dsv3.cross_entropy. Attention ops are in Attention.cpp, routing and experts
// in MoE.cpp. Runs after dsv3-decompose, before dsv3-materialize-params.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"
#include "lowering/Passes.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
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
  return generic1({a, bT}, acc,
                  {map(3, {0, 2}), map(3, {1, 2}), map(3, {0, 1})}, iters(2, 1),
                  multiplyAccumulate);
}

Value LinalgBuilder::transpose2D(Value x) {
  auto shape = cast<RankedTensorType>(x.getType()).getShape();
  return generic1({x}, empty({shape[1], shape[0]}),
                  {map(2, {1, 0}), identity(2)}, iters(2),
                  [](OpBuilder &nb, Location l, ValueRange a) {
                    linalg::YieldOp::create(nb, l, ValueRange{a[0]});
                  });
}

void LinalgBuilder::multiplyAccumulate(OpBuilder &b, Location loc,
                                       ValueRange args) {
  Value mul = arith::MulFOp::create(b, loc, args[0], args[1]);
  linalg::YieldOp::create(b, loc,
                          ValueRange{arith::AddFOp::create(b, loc, args[2], mul)});
}

Value dsv3::lowering::siluTimes(OpBuilder &b, Location loc, Value g, Value u) {
  Value silu = arith::MulFOp::create(b, loc, g, sigmoid(b, loc, g));
  return arith::MulFOp::create(b, loc, silu, u);
}

std::pair<Value, Value> dsv3::lowering::siluTimesGrad(OpBuilder &b,
                                                      Location loc, Value g,
                                                      Value u, Value dy) {
  // silu'(g) = s (1 + g (1 - s)), s = sigmoid(g)
  Value s = sigmoid(b, loc, g);
  Value one = f32Const(b, loc, 1.0);
  Value silu = arith::MulFOp::create(b, loc, g, s);
  Value dsilu = arith::MulFOp::create(
      b, loc, s,
      arith::AddFOp::create(
          b, loc, one,
          arith::MulFOp::create(b, loc, g, arith::SubFOp::create(b, loc, one, s))));
  Value dyu = arith::MulFOp::create(b, loc, dy, u);
  return {arith::MulFOp::create(b, loc, dyu, dsilu),
          arith::MulFOp::create(b, loc, dy, silu)};
}

Value dsv3::lowering::clampedIndex(OpBuilder &b, Location loc, Value id,
                                   int64_t size) {
  Value lo = arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(0));
  Value hi = arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(size - 1));
  Value c = arith::MinSIOp::create(b, loc, arith::MaxSIOp::create(b, loc, id, lo),
                                   hi);
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), c);
}

Value dsv3::lowering::isValidLabel(OpBuilder &b, Location loc, Value label) {
  Value zero = arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(0));
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, label, zero);
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

/// Per-row r = rsqrt(mean(x^2) + eps) of a [M, D] tensor.
Value rmsScale(LinalgBuilder &lb, Value x2d, double eps) {
  auto shape = cast<RankedTensorType>(x2d.getType()).getShape();
  int64_t d = shape[1];
  Value ss = lb.generic1({x2d}, lb.filled({shape[0]}, 0.0),
                         {lb.identity(2), lb.map(2, {0})}, lb.iters(1, 1),
                         [](OpBuilder &nb, Location l, ValueRange a) {
                           Value sq = arith::MulFOp::create(nb, l, a[0], a[0]);
                           linalg::YieldOp::create(
                               nb, l, ValueRange{arith::AddFOp::create(nb, l, a[1], sq)});
                         });
  return lb.generic1({ss}, lb.empty({shape[0]}), {lb.identity(1), lb.identity(1)},
                     lb.iters(1), [&](OpBuilder &nb, Location l, ValueRange a) {
                       Value mean = arith::DivFOp::create(nb, l, a[0], f32Const(nb, l, d));
                       linalg::YieldOp::create(
                           nb, l, ValueRange{math::RsqrtOp::create(
                                      nb, l, arith::AddFOp::create(nb, l, mean, f32Const(nb, l, eps)))});
                     });
}

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
    Value r = rmsScale(lb, x, op.getEpsilon().convertToDouble());
    Value y = lb.generic1(
        {x, r, op.getWeight()}, lb.empty({m, d}),
        {lb.identity(2), lb.map(2, {0}), lb.map(2, {1}), lb.identity(2)},
        lb.iters(2), [](OpBuilder &nb, Location l, ValueRange a) {
          Value v = arith::MulFOp::create(nb, l, a[0], a[1]);
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

/// Row maximum m[b,t] and sum_v exp(logits - m) of [B, T, V] logits.
std::pair<Value, Value> softmaxRowStats(LinalgBuilder &lb, Value logits) {
  auto s = cast<RankedTensorType>(logits.getType()).getShape();
  Value mx = lb.generic1(
      {logits}, lb.filled({s[0], s[1]}, -INFINITY),
      {lb.identity(3), lb.map(3, {0, 1})}, lb.iters(2, 1),
      [](OpBuilder &nb, Location l, ValueRange a) {
        linalg::YieldOp::create(nb, l, ValueRange{arith::MaximumFOp::create(nb, l, a[0], a[1])});
      });
  Value sum = lb.generic1(
      {logits, mx}, lb.filled({s[0], s[1]}, 0.0),
      {lb.identity(3), lb.map(3, {0, 1}), lb.map(3, {0, 1})}, lb.iters(2, 1),
      [](OpBuilder &nb, Location l, ValueRange a) {
        Value e = math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, a[0], a[1]));
        linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[2], e)});
      });
  return {mx, sum};
}

/// dsv3.cross_entropy -> row max, sum of exp, per-token NLL, mean.
struct LowerCrossEntropy : OpRewritePattern<CrossEntropyOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CrossEntropyOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value logits = op.getLogits();
    auto s = op.getLogits().getType().getShape();
    int64_t bs = s[0], ts = s[1], vocab = s[2];
    auto [mx, sum] = softmaxRowStats(lb, logits);
    // Per-token loss and validity (labels < 0 are ignored).
    SmallVector<Value> nll = lb.generic(
        {mx, sum, op.getLabels()}, {lb.empty({bs, ts}), lb.empty({bs, ts})},
        {lb.identity(2), lb.identity(2), lb.identity(2), lb.identity(2),
         lb.identity(2)},
        lb.iters(2), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value b = linalg::IndexOp::create(nb, l, 0);
          Value t = linalg::IndexOp::create(nb, l, 1);
          Value label = clampedIndex(nb, l, a[2], vocab);
          Value picked =
              tensor::ExtractOp::create(nb, l, logits, ValueRange{b, t, label});
          Value lse = arith::AddFOp::create(nb, l, a[0], math::LogOp::create(nb, l, a[1]));
          Value valid = isValidLabel(nb, l, a[2]);
          Value zero = f32Const(nb, l, 0.0);
          linalg::YieldOp::create(
              nb, l,
              ValueRange{arith::SelectOp::create(nb, l, valid,
                                                 arith::SubFOp::create(nb, l, lse, picked), zero),
                         arith::SelectOp::create(nb, l, valid, f32Const(nb, l, 1.0), zero)});
        });
    auto scalar = AffineMap::get(2, 0, {}, rw.getContext());
    SmallVector<Value> totals = lb.generic(
        {nll[0], nll[1]}, {lb.filled({}, 0.0), lb.filled({}, 0.0)},
        {lb.identity(2), lb.identity(2), scalar, scalar}, lb.iters(0, 2),
        [](OpBuilder &nb, Location l, ValueRange a) {
          linalg::YieldOp::create(nb, l,
                                  ValueRange{arith::AddFOp::create(nb, l, a[2], a[0]),
                                             arith::AddFOp::create(nb, l, a[3], a[1])});
        });
    auto none = AffineMap::get(0, 0, {}, rw.getContext());
    Value mean = lb.generic1(
        {totals[0], totals[1]}, lb.empty({}), {none, none, none}, {},
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value count = arith::MaximumFOp::create(nb, l, a[1], f32Const(nb, l, 1.0));
          linalg::YieldOp::create(nb, l, ValueRange{arith::DivFOp::create(nb, l, a[0], count)});
        });
    rw.replaceOp(op, mean);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Gradient patterns
//===----------------------------------------------------------------------===//

/// dsv3.linear_grad_input -> dx = dy W, as dy (W^T)^T on the microkernel.
struct LowerLinearGradInput : OpRewritePattern<LinearGradInputOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LinearGradInputOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto dyType = op.getDy().getType();
    if (dyType.getRank() < 2)
      return rw.notifyMatchFailure(op, "rank-1 input");
    Value dx = lb.matmulNT(lb.collapseTo2D(op.getDy()),
                           lb.transpose2D(op.getWeight()));
    rw.replaceOp(op, lb.expandLike(dx, dyType,
                                   op.getWeight().getType().getDimSize(1)));
    return success();
  }
};

/// dsv3.linear_grad_weight -> dW = dy^T x over all tokens, on the microkernel.
struct LowerLinearGradWeight : OpRewritePattern<LinearGradWeightOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LinearGradWeightOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    if (op.getDy().getType().getRank() < 2)
      return rw.notifyMatchFailure(op, "rank-1 input");
    Value dw = lb.matmulNT(lb.transpose2D(lb.collapseTo2D(op.getDy())),
                           lb.transpose2D(lb.collapseTo2D(op.getX())));
    rw.replaceOp(op, dw);
    return success();
  }
};

/// dsv3.rms_norm_grad_input -> dx = r w dy - x r^3 / D * sum(w dy x).
struct LowerRMSNormGradInput : OpRewritePattern<RMSNormGradInputOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RMSNormGradInputOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto xType = op.getX().getType();
    if (xType.getRank() < 2)
      return rw.notifyMatchFailure(op, "rank-1 input");
    Value x = lb.collapseTo2D(op.getX()), dy = lb.collapseTo2D(op.getDy());
    auto shape = cast<RankedTensorType>(x.getType()).getShape();
    int64_t m = shape[0], d = shape[1];
    Value r = rmsScale(lb, x, op.getEpsilon().convertToDouble());
    Value dot = lb.generic1(
        {x, dy, op.getWeight()}, lb.filled({m}, 0.0),
        {lb.identity(2), lb.identity(2), lb.map(2, {1}), lb.map(2, {0})},
        lb.iters(1, 1), [](OpBuilder &nb, Location l, ValueRange a) {
          Value wdy = arith::MulFOp::create(nb, l, a[2], a[1]);
          Value t = arith::MulFOp::create(nb, l, wdy, a[0]);
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[3], t)});
        });
    Value dx = lb.generic1(
        {x, dy, op.getWeight(), r, dot}, lb.empty({m, d}),
        {lb.identity(2), lb.identity(2), lb.map(2, {1}), lb.map(2, {0}),
         lb.map(2, {0}), lb.identity(2)},
        lb.iters(2), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value wdy = arith::MulFOp::create(nb, l, a[2], a[1]);
          Value first = arith::MulFOp::create(nb, l, a[3], wdy);
          Value r3 = arith::MulFOp::create(
              nb, l, a[3], arith::MulFOp::create(nb, l, a[3], a[3]));
          Value coef = arith::DivFOp::create(
              nb, l, arith::MulFOp::create(nb, l, r3, a[4]), f32Const(nb, l, d));
          Value second = arith::MulFOp::create(nb, l, a[0], coef);
          linalg::YieldOp::create(nb, l, ValueRange{arith::SubFOp::create(nb, l, first, second)});
        });
    rw.replaceOp(op, lb.expandLike(dx, xType, d));
    return success();
  }
};

/// dsv3.rms_norm_grad_weight -> dw[d] = sum_m dy x r.
struct LowerRMSNormGradWeight : OpRewritePattern<RMSNormGradWeightOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RMSNormGradWeightOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    if (op.getX().getType().getRank() < 2)
      return rw.notifyMatchFailure(op, "rank-1 input");
    Value x = lb.collapseTo2D(op.getX()), dy = lb.collapseTo2D(op.getDy());
    int64_t d = cast<RankedTensorType>(x.getType()).getDimSize(1);
    Value r = rmsScale(lb, x, op.getEpsilon().convertToDouble());
    // Loops (d, m): reduce over tokens.
    Value dw = lb.generic1(
        {x, dy, r}, lb.filled({d}, 0.0),
        {lb.map(2, {1, 0}), lb.map(2, {1, 0}), lb.map(2, {1}), lb.map(2, {0})},
        lb.iters(1, 1), [](OpBuilder &nb, Location l, ValueRange a) {
          Value t = arith::MulFOp::create(nb, l, arith::MulFOp::create(nb, l, a[1], a[0]), a[2]);
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[3], t)});
        });
    rw.replaceOp(op, dw);
    return success();
  }
};

/// dsv3.swiglu_grad -> elementwise (dgate, dup).
struct LowerSwiGLUGrad : OpRewritePattern<SwiGLUGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SwiGLUGradOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto type = op.getGate().getType();
    unsigned rank = type.getRank();
    SmallVector<AffineMap> maps(5, lb.identity(rank));
    SmallVector<Value> g = lb.generic(
        {op.getGate(), op.getUp(), op.getDy()},
        {lb.empty(type.getShape()), lb.empty(type.getShape())}, maps,
        lb.iters(rank), [](OpBuilder &nb, Location l, ValueRange a) {
          auto [dg, du] = siluTimesGrad(nb, l, a[0], a[1], a[2]);
          linalg::YieldOp::create(nb, l, ValueRange{dg, du});
        });
    rw.replaceOp(op, g);
    return success();
  }
};

/// dsv3.cross_entropy_grad -> (softmax - onehot) * dloss / (B*T).
struct LowerCrossEntropyGrad : OpRewritePattern<CrossEntropyGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CrossEntropyGradOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value logits = op.getLogits();
    auto s = op.getLogits().getType().getShape();
    auto [mx, sum] = softmaxRowStats(lb, logits);
    Value count = lb.generic1(
        {op.getLabels()}, lb.filled({}, 0.0),
        {lb.identity(2), AffineMap::get(2, 0, {}, rw.getContext())}, lb.iters(0, 2),
        [](OpBuilder &nb, Location l, ValueRange a) {
          Value one = arith::SelectOp::create(nb, l, isValidLabel(nb, l, a[0]),
                                              f32Const(nb, l, 1.0), f32Const(nb, l, 0.0));
          linalg::YieldOp::create(nb, l, ValueRange{arith::AddFOp::create(nb, l, a[1], one)});
        });
    auto scalar = AffineMap::get(3, 0, {}, rw.getContext());
    Value dl = lb.generic1(
        {logits, mx, sum, op.getLabels(), op.getDloss(), count}, lb.empty(s),
        {lb.identity(3), lb.map(3, {0, 1}), lb.map(3, {0, 1}), lb.map(3, {0, 1}),
         scalar, scalar, lb.identity(3)},
        lb.iters(3), [&](OpBuilder &nb, Location l, ValueRange a) {
          Value p = arith::DivFOp::create(
              nb, l, math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, a[0], a[1])),
              a[2]);
          Value v = arith::IndexCastOp::create(nb, l, nb.getI64Type(),
                                               linalg::IndexOp::create(nb, l, 2));
          Value hit = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, a[3], v);
          Value g = arith::SelectOp::create(
              nb, l, hit, arith::SubFOp::create(nb, l, p, f32Const(nb, l, 1.0)), p);
          Value n = arith::MaximumFOp::create(nb, l, a[5], f32Const(nb, l, 1.0));
          Value w = arith::DivFOp::create(nb, l, a[4], n);
          Value scaled = arith::MulFOp::create(nb, l, g, w);
          linalg::YieldOp::create(
              nb, l, ValueRange{arith::SelectOp::create(nb, l, isValidLabel(nb, l, a[3]),
                                                        scaled, f32Const(nb, l, 0.0))});
        });
    rw.replaceOp(op, dl);
    return success();
  }
};

/// dsv3.embedding_grad -> zero table, then token rows added in token order
/// (a sequential scatter: deterministic whatever the thread count).
struct LowerEmbeddingGrad : OpRewritePattern<EmbeddingGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(EmbeddingGradOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    LinalgBuilder lb(rw, loc);
    auto ts = op.getDtable().getType().getShape();
    int64_t vocab = ts[0], d = ts[1];
    Value ids = tensor::CollapseShapeOp::create(
        rw, loc, op.getIds(), SmallVector<ReassociationIndices>{{0, 1}});
    Value dy = lb.collapseTo2D(op.getDy());
    int64_t n = cast<RankedTensorType>(dy.getType()).getDimSize(0);
    Value init = lb.filled(ts, 0.0);
    auto loop = scf::ForOp::create(
        rw, loc, indexConst(rw, loc, 0), indexConst(rw, loc, n),
        indexConst(rw, loc, 1), ValueRange{init},
        [&](OpBuilder &b, Location l, Value tok, ValueRange acc) {
          Value id = tensor::ExtractOp::create(b, l, ids, ValueRange{tok});
          Value row = clampedIndex(b, l, id, vocab);
          auto inner = scf::ForOp::create(
              b, l, indexConst(b, l, 0), indexConst(b, l, d), indexConst(b, l, 1),
              ValueRange{acc[0]},
              [&](OpBuilder &ib, Location il, Value col, ValueRange t) {
                Value cur = tensor::ExtractOp::create(ib, il, t[0], ValueRange{row, col});
                Value add = tensor::ExtractOp::create(ib, il, dy, ValueRange{tok, col});
                Value sum = arith::AddFOp::create(ib, il, cur, add);
                scf::YieldOp::create(
                    ib, il, ValueRange{tensor::InsertOp::create(ib, il, sum, t[0],
                                                                ValueRange{row, col})});
              });
          scf::YieldOp::create(b, l, inner.getResults());
        });
    rw.replaceOp(op, loop.getResult(0));
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
    populateFP8LoweringPatterns(patterns);
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
               LowerCrossEntropy, LowerLinearGradInput, LowerLinearGradWeight,
               LowerRMSNormGradInput, LowerRMSNormGradWeight, LowerSwiGLUGrad,
               LowerCrossEntropyGrad, LowerEmbeddingGrad>(patterns.getContext());
}
