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

/// RoPE of `x [B, T, H, R]` at `positions` with the op's frequencies.
template <class Op> Value rotate(OpBuilder &b, Location loc, Op op, Value x, Value positions) {
  return RopeOp::create(b, loc, x.getType(), x, positions, op.getRopeInvFreqAttr(),
                        op.getRopeAttentionScalingAttr(), UnitAttr());
}

/// The query heads of an MLA op: q_nope [B,T,H,Dn] and q_rope [B,T,H,R]
/// rotated at `positions`.
template <class Op>
std::pair<Value, Value> queryHeads(OpBuilder &b, Location loc, Op op, Value positions) {
  Value x = op.getX();
  auto eps = op.getRmsNormEpsAttr();
  Value q = op.getQLoraRank() > 0
                ? linear(b, loc, rmsNorm(b, loc, linear(b, loc, x, op.getQA()), op.getQANorm(), eps),
                         op.getQB())
                : linear(b, loc, x, op.getQProj());
  q = splitLast(b, loc, q, op.getNumHeads()); // [B,T,H,nope+rope]
  int64_t nope = op.getQkNopeHeadDim(), rope = op.getQkRopeHeadDim();
  return {sliceLast(b, loc, q, 0, nope),
          rotate(b, loc, op, sliceLast(b, loc, q, nope, rope), positions)};
}

/// The latent of each token: c = rms_norm(kv_a(x)[:kvr]) [B,T,kvr] and the
/// rope key rotated at `positions` [B,T,R] (one key shared by all heads).
template <class Op>
std::pair<Value, Value> latentKeys(OpBuilder &b, Location loc, Op op, Value x, Value positions) {
  int64_t kvr = op.getKvLoraRank(), rope = op.getQkRopeHeadDim();
  Value kvA = linear(b, loc, x, op.getKvA()); // [B,T,kvr+rope]
  Value latent = rmsNorm(b, loc, sliceLast(b, loc, kvA, 0, kvr), op.getKvANorm(),
                         op.getRmsNormEpsAttr());
  // Rotated as a single head.
  Value kRope = rotate(b, loc, op, splitLast(b, loc, sliceLast(b, loc, kvA, kvr, rope), 1),
                       positions);
  kRope = tensor::CollapseShapeOp::create(
      b, loc, kRope, SmallVector<ReassociationIndices>{{0}, {1}, {2, 3}});
  return {latent, kRope};
}

/// Positions 0..T-1 of every row of `x [B, T, ...]` (a full sequence).
Value sequencePositions(OpBuilder &b, Location loc, Value x) {
  auto shape = cast<RankedTensorType>(x.getType()).getShape();
  return PositionsOp::create(b, loc, RankedTensorType::get({shape[0], shape[1]}, b.getI64Type()),
                             b.getI64IntegerAttr(0));
}

/// dsv3.mla_attention -> projections, latent norms, RoPE and dsv3.mla_core.
struct DecomposeMLA : OpRewritePattern<MLAAttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLAAttentionOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t heads = op.getNumHeads(), nope = op.getQkNopeHeadDim(), vd = op.getVHeadDim();
    Value positions = sequencePositions(rw, loc, op.getX());
    auto [qNope, qRope] = queryHeads(rw, loc, op, positions);
    auto [latent, kRope] = latentKeys(rw, loc, op, op.getX(), positions);
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

/// dsv3.mla_cache_row -> the latent and rope key of dsv3.mla_attention's
/// decomposition (shared with it by CSE), side by side.
struct DecomposeMLACacheRow : OpRewritePattern<MLACacheRowOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACacheRowOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto [latent, kRope] = latentKeys(rw, loc, op, op.getX(), op.getPositions());
    auto shape = op.getType().getShape();
    Value row = tensor::EmptyOp::create(rw, loc, shape, rw.getF32Type());
    SmallVector<OpFoldResult> offsets(3, rw.getIndexAttr(0)), strides(3, rw.getIndexAttr(1));
    SmallVector<OpFoldResult> sizes = {rw.getIndexAttr(shape[0]), rw.getIndexAttr(shape[1]),
                                       rw.getIndexAttr(op.getKvLoraRank())};
    row = tensor::InsertSliceOp::create(rw, loc, latent, row, offsets, sizes, strides);
    offsets.back() = rw.getIndexAttr(op.getKvLoraRank());
    sizes.back() = rw.getIndexAttr(op.getQkRopeHeadDim());
    row = tensor::InsertSliceOp::create(rw, loc, kRope, row, offsets, sizes, strides);
    rw.replaceOp(op, row);
    return success();
  }
};

/// dsv3.mla_cached_attention -> the query heads, kv_b split into W_UK and
/// W_UV (views of the parameter), dsv3.mla_absorbed_core, o_proj.
struct DecomposeMLACachedAttention : OpRewritePattern<MLACachedAttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACachedAttentionOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t heads = op.getNumHeads(), nope = op.getQkNopeHeadDim(), vd = op.getVHeadDim(),
            kvr = op.getKvLoraRank();
    auto [qNope, qRope] = queryHeads(rw, loc, op, op.getPositions());
    // kv_b [H*(nope+vd), kvr] viewed as [H, nope+vd, kvr].
    Value kvB = tensor::ExpandShapeOp::create(
        rw, loc, f32Tensor({heads, nope + vd, kvr}, rw.getContext()), op.getKvB(),
        SmallVector<ReassociationIndices>{{0, 1}, {2}});
    auto headRows = [&](int64_t from, int64_t count) -> Value {
      SmallVector<OpFoldResult> offsets = {rw.getIndexAttr(0), rw.getIndexAttr(from),
                                           rw.getIndexAttr(0)};
      SmallVector<OpFoldResult> sizes = {rw.getIndexAttr(heads), rw.getIndexAttr(count),
                                         rw.getIndexAttr(kvr)};
      SmallVector<OpFoldResult> strides(3, rw.getIndexAttr(1));
      return tensor::ExtractSliceOp::create(rw, loc, kvB, offsets, sizes, strides);
    };
    auto xShape = op.getX().getType().getShape();
    Value core = MLAAbsorbedCoreOp::create(
        rw, loc, f32Tensor({xShape[0], xShape[1], heads, vd}, rw.getContext()), qNope, qRope,
        headRows(0, nope), headRows(nope, vd), op.getCache(), op.getRows(), op.getPositions(),
        op.getSoftmaxScaleAttr());
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
    patterns.add<DecomposeMLA, DecomposeMLACacheRow, DecomposeMLACachedAttention, DecomposeMLP,
                 DecomposeMoE, DecomposeMTPInput>(
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
