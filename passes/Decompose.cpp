//===- Decompose.cpp - model-structure ops to tensor-level ops ------------===//
//
// First pass of every pipeline after the frontend: MLA, MLP, MoE and the MTP
// input projection become the tensor-level dsv3 ops plus tensor reshapes.
// Nothing here changes numerics; it only spells the architecture out.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3DECOMPOSEPASS
#include "passes/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;

namespace {

//===----------------------------------------------------------------------===//
// Builders for the tensor-level ops with inferred result types
//===----------------------------------------------------------------------===//

RankedTensorType f32Tensor(ArrayRef<int64_t> shape, MLIRContext *ctx) {
  return RankedTensorType::get(shape, Float32Type::get(ctx));
}

Value linear(OpBuilder &b, Location loc, Value x, Value w) {
  auto xs = cast<RankedTensorType>(x.getType()).getShape();
  SmallVector<int64_t> shape(xs);
  shape.back() = cast<RankedTensorType>(w.getType()).getDimSize(0);
  return LinearOp::create(b, loc, f32Tensor(shape, b.getContext()), x, w);
}

Value rmsNorm(OpBuilder &b, Location loc, Value x, Value w, FloatAttr eps) {
  return RMSNormOp::create(b, loc, x.getType(), x, w, eps);
}

Value swigluMLP(OpBuilder &b, Location loc, Value x, Value gate, Value up,
                Value down) {
  Value g = linear(b, loc, x, gate);
  Value u = linear(b, loc, x, up);
  Value a = SwiGLUOp::create(b, loc, g.getType(), g, u);
  return linear(b, loc, a, down);
}

/// Static slice [.., offset : offset+size] of the last dimension.
Value sliceLast(OpBuilder &b, Location loc, Value x, int64_t offset,
                int64_t size) {
  auto shape = cast<RankedTensorType>(x.getType()).getShape();
  SmallVector<OpFoldResult> offsets(shape.size(), b.getIndexAttr(0));
  SmallVector<OpFoldResult> sizes, strides(shape.size(), b.getIndexAttr(1));
  for (int64_t s : shape)
    sizes.push_back(b.getIndexAttr(s));
  offsets.back() = b.getIndexAttr(offset);
  sizes.back() = b.getIndexAttr(size);
  return tensor::ExtractSliceOp::create(b, loc, x, offsets, sizes, strides);
}

/// [..., A*B] -> [..., A, B].
Value splitLast(OpBuilder &b, Location loc, Value x, int64_t a) {
  auto shape = cast<RankedTensorType>(x.getType()).getShape();
  SmallVector<int64_t> out(shape.drop_back());
  out.push_back(a);
  out.push_back(shape.back() / a);
  SmallVector<ReassociationIndices> re;
  for (int64_t i = 0, e = shape.size() - 1; i < e; ++i)
    re.push_back({i});
  re.push_back({static_cast<int64_t>(shape.size()) - 1,
                static_cast<int64_t>(shape.size())});
  return tensor::ExpandShapeOp::create(b, loc, f32Tensor(out, b.getContext()),
                                       x, re);
}

/// Merges the last two dimensions.
Value mergeLast(OpBuilder &b, Location loc, Value x) {
  int64_t rank = cast<RankedTensorType>(x.getType()).getRank();
  SmallVector<ReassociationIndices> re;
  for (int64_t i = 0; i < rank - 2; ++i)
    re.push_back({i});
  re.push_back({rank - 2, rank - 1});
  return tensor::CollapseShapeOp::create(b, loc, x, re);
}

//===----------------------------------------------------------------------===//
// Patterns
//===----------------------------------------------------------------------===//

/// dsv3.mla_attention -> projections, latent norms, RoPE and dsv3.mla_core.
struct DecomposeMLA : OpRewritePattern<MLAAttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLAAttentionOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t heads = op.getNumHeads(), nope = op.getQkNopeHeadDim(),
            rope = op.getQkRopeHeadDim(), kvr = op.getKvLoraRank(),
            vd = op.getVHeadDim();
    auto eps = op.getRmsNormEpsAttr();
    Value x = op.getX();

    Value q = op.getQLoraRank() > 0
                  ? linear(rw, loc,
                           rmsNorm(rw, loc, linear(rw, loc, x, op.getQA()),
                                   op.getQANorm(), eps),
                           op.getQB())
                  : linear(rw, loc, x, op.getQProj());
    q = splitLast(rw, loc, q, heads); // [B,T,H,nope+rope]
    Value qNope = sliceLast(rw, loc, q, 0, nope);
    Value qRope = sliceLast(rw, loc, q, nope, rope);
    // Every row starts at position 0 (a full sequence).
    auto xShape = cast<RankedTensorType>(x.getType()).getShape();
    Value positions = PositionsOp::create(
        rw, loc, RankedTensorType::get({xShape[0], xShape[1]}, rw.getI64Type()),
        rw.getI64IntegerAttr(0));
    auto ropeAttrs = [&](Value v) {
      return RopeOp::create(rw, loc, v.getType(), v, positions, op.getRopeInvFreqAttr(),
                            op.getRopeAttentionScalingAttr(), UnitAttr());
    };
    qRope = ropeAttrs(qRope);

    Value kvA = linear(rw, loc, x, op.getKvA()); // [B,T,kvr+rope]
    Value latent = rmsNorm(rw, loc, sliceLast(rw, loc, kvA, 0, kvr),
                           op.getKvANorm(), eps);
    // The rope key is shared by all heads: rotate it as a single head.
    Value kRope = splitLast(rw, loc, sliceLast(rw, loc, kvA, kvr, rope), 1);
    kRope = ropeAttrs(kRope);
    kRope = tensor::CollapseShapeOp::create(
        rw, loc, kRope, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});

    Value kv = splitLast(rw, loc, linear(rw, loc, latent, op.getKvB()), heads);
    Value kNope = sliceLast(rw, loc, kv, 0, nope);
    Value v = sliceLast(rw, loc, kv, nope, vd);

    auto vShape = cast<RankedTensorType>(v.getType()).getShape();
    Value core = MLACoreOp::create(rw, loc, f32Tensor(vShape, rw.getContext()),
                                   qNope, qRope, kNope, kRope, v,
                                   op.getSegmentIds(), op.getSoftmaxScaleAttr());
    rw.replaceOp(op, linear(rw, loc, mergeLast(rw, loc, core), op.getO()));
    return success();
  }
};

/// dsv3.mlp -> linear, linear, swiglu, linear.
struct DecomposeMLP : OpRewritePattern<MLPOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLPOp op, PatternRewriter &rw) const override {
    rw.replaceOp(op, swigluMLP(rw, op.getLoc(), op.getX(), op.getGate(),
                               op.getUp(), op.getDown()));
    return success();
  }
};

/// Routed experts as grouped GEMMs: dispatch the (token, slot) pairs into
/// per-expert row groups, run each expert's SwiGLU MLP on its group, combine
/// with the gate weights.
Value routedExperts(OpBuilder &b, Location loc, Value tokens, Value weights,
                    Value ids, Value gate, Value up, Value down) {
  auto idsType = cast<RankedTensorType>(ids.getType());
  auto gateShape = cast<RankedTensorType>(gate.getType()).getShape();
  int64_t n = idsType.getDimSize(0), k = idsType.getDimSize(1),
          experts = gateShape[0], inner = gateShape[1],
          hidden = gateShape[2];
  MLIRContext *ctx = b.getContext();
  auto i64 = [&](ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, b.getI64Type());
  };
  auto dispatch = MoEDispatchOp::create(
      b, loc, f32Tensor({n * k, hidden}, ctx), i64({n, k}), i64({n * k}),
      i64({experts + 1}), tokens, ids, b.getI64IntegerAttr(experts));
  Value offsets = dispatch.getOffsets();
  auto innerType = f32Tensor({n * k, inner}, ctx);
  Value g = GroupedLinearOp::create(b, loc, innerType, dispatch.getRows(), gate, offsets);
  Value u = GroupedLinearOp::create(b, loc, innerType, dispatch.getRows(), up, offsets);
  Value act = SwiGLUOp::create(b, loc, innerType, g, u);
  Value out = GroupedLinearOp::create(b, loc, f32Tensor({n * k, hidden}, ctx),
                                      act, down, offsets);
  return MoECombineOp::create(b, loc, tokens.getType(), out, weights,
                              dispatch.getRowOfSlot());
}

/// dsv3.moe -> router + routed experts on flattened tokens, plus shared MLP.
struct DecomposeMoE : OpRewritePattern<MoEOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto xType = op.getX().getType();
    Value tokens = tensor::CollapseShapeOp::create(
        rw, loc, op.getX(), SmallVector<ReassociationIndices>{{0, 1}, {2}});
    int64_t n = xType.getDimSize(0) * xType.getDimSize(1);
    auto router = MoERouterOp::create(
        rw, loc, f32Tensor({n, static_cast<int64_t>(op.getTopK())}, rw.getContext()),
        op.getExpertIds().getType(), tokens, op.getRouter(), op.getBias(),
        op.getTopKAttr(), op.getNGroupAttr(), op.getTopkGroupAttr(),
        op.getNormTopkProbAttr(), op.getRoutedScalingFactorAttr(), /*nodes=*/nullptr,
        /*max_nodes=*/nullptr);
    Value y = routedExperts(rw, loc, tokens, router.getWeights(),
                            router.getExpertIds(), op.getExpertGate(),
                            op.getExpertUp(), op.getExpertDown());
    if (op.getSharedGate())
      y = arith::AddFOp::create(rw, loc, y,
                                swigluMLP(rw, loc, tokens, op.getSharedGate(),
                                          op.getSharedUp(),
                                          op.getSharedDown()));
    Value out = tensor::ExpandShapeOp::create(
        rw, loc, xType, y, SmallVector<ReassociationIndices>{{0, 1}, {2}});
    rw.replaceOp(op, {out, router.getExpertIds()});
    return success();
  }
};

/// dsv3.mtp_input -> two RMSNorms, concatenation, eh_proj.
struct DecomposeMTPInput : OpRewritePattern<MTPInputOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MTPInputOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto eps = op.getRmsNormEpsAttr();
    Value e = rmsNorm(rw, loc, op.getEmbedding(), op.getEnorm(), eps);
    Value h = rmsNorm(rw, loc, op.getHidden(), op.getHnorm(), eps);
    auto shape = op.getHidden().getType().getShape();
    SmallVector<int64_t> catShape(shape);
    catShape.back() *= 2;
    Value cat = tensor::EmptyOp::create(rw, loc, catShape, rw.getF32Type());
    SmallVector<OpFoldResult> offsets(3, rw.getIndexAttr(0)),
        strides(3, rw.getIndexAttr(1)), sizes;
    for (int64_t s : shape)
      sizes.push_back(rw.getIndexAttr(s));
    // Embedding half first, as the published eh_proj weights expect.
    cat = tensor::InsertSliceOp::create(rw, loc, e, cat, offsets, sizes,
                                        strides);
    offsets.back() = rw.getIndexAttr(shape.back());
    cat = tensor::InsertSliceOp::create(rw, loc, h, cat, offsets, sizes,
                                        strides);
    rw.replaceOp(op, linear(rw, loc, cat, op.getEhProj()));
    return success();
  }
};

struct DSV3DecomposePass
    : dsv3::impl::DSV3DecomposePassBase<DSV3DecomposePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<DecomposeMLA, DecomposeMLP, DecomposeMoE, DecomposeMTPInput>(
        &getContext());
    // Folding would merge the reshapes we emit; keep the IR as written so the
    // dump reads like the architecture.
    GreedyRewriteConfig config;
    config.enableFolding(false);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns),
                                     config)))
      signalPassFailure();
  }
};

} // namespace
