//===- SelectUkernels.cpp - dsv3-cpu-select-ukernels ----------------------===//
//
// CPU kernel selection, before convert-dsv3-to-linalg: the tensor-level dsv3
// ops the CPU runtime has hand-written kernels for (runtime/kernels) become
// dsv3_codegen.ukernel calls in destination-passing style; everything else
// keeps its reference lowering to linalg. Matching is by op and operand
// types only (no tags, no parameter names), so another target selects its
// own kernels from the same IR. The float32 GEMM is chosen later, on the
// bufferized linalg form, by its structure (dsv3-cpu-lower-ukernels).
//
//===----------------------------------------------------------------------===//
#include "ir/Codegen/CodegenDialect.h"
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"
#include "lowering/Passes.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3CPUSELECTUKERNELSPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;
using namespace dsv3;
using namespace dsv3::lowering;

namespace {

/// A ukernel call of `kernel` on `ins` writing fresh tensors of
/// `resultTypes` (kernels overwrite their outputs entirely); its results.
ResultRange callUkernel(OpBuilder &b, Location loc, StringRef kernel,
                        ValueRange ins, TypeRange resultTypes) {
  SmallVector<Value> outs;
  for (Type t : resultTypes)
    outs.push_back(emptyLike(b, loc, t));
  return codegen::UkernelOp::create(b, loc, resultTypes, kernel, ins, outs)
      .getResults();
}

void replaceWithUkernel(PatternRewriter &rw, Operation *op, StringRef kernel,
                        ValueRange ins) {
  rw.replaceOp(op, callUkernel(rw, op->getLoc(), kernel, ins, op->getResultTypes()));
}

//===----------------------------------------------------------------------===//
// Attention: runtime/kernels/Attention.cpp
//===----------------------------------------------------------------------===//

/// The attention kernels' common operands of dsv3.mla_core or its
/// gradient: q/k/v, the segment ids (all zero, one document per row, when
/// the op has none) and the softmax scale.
template <class Op> SmallVector<Value> attentionOperands(OpBuilder &b, Op op) {
  Location loc = op.getLoc();
  Value segments = op.getSegmentIds();
  if (!segments) {
    auto ks = op.getKNope().getType().getShape();
    segments = LinalgBuilder(b, loc).filledInt({ks[0], ks[1]}, 0);
  }
  Value s = arith::ConstantOp::create(b, loc, b.getF64FloatAttr(op.getSoftmaxScale().convertToDouble()));
  return {op.getQNope(), op.getQRope(), op.getKNope(), op.getKRope(), op.getV(), segments, s};
}

/// dsv3.mla_core: causal scores by row blocks through the GEMM microkernel,
/// softmax and the product with V per (batch, head), no [B, H, Tq, Tk]
/// tensor; a cached prefix (Tq < Tk) included.
struct SelectMLACore : OpRewritePattern<MLACoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreOp op, PatternRewriter &rw) const override {
    SmallVector<Value> ins = attentionOperands(rw, op);
    replaceWithUkernel(rw, op, "dsv3rt_mla_attention", ins);
    return success();
  }
};

/// dsv3.mla_core_grad: the probabilities are recomputed per (batch, head).
struct SelectMLACoreGrad : OpRewritePattern<MLACoreGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLACoreGradOp op, PatternRewriter &rw) const override {
    SmallVector<Value> ins = attentionOperands(rw, op);
    ins.push_back(op.getDout());
    replaceWithUkernel(rw, op, "dsv3rt_mla_attention_grad", ins);
    return success();
  }
};

/// dsv3.mla_absorbed_core: the decode/verify form over a latent cache.
struct SelectMLAAbsorbedCore : OpRewritePattern<MLAAbsorbedCoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MLAAbsorbedCoreOp op, PatternRewriter &rw) const override {
    Value s = arith::ConstantOp::create(rw, op.getLoc(),
                                        rw.getF64FloatAttr(op.getSoftmaxScale().convertToDouble()));
    bool bf16 = op.getCache().getType().getElementType().isBF16();
    replaceWithUkernel(rw, op,
                       bf16 ? "dsv3rt_mla_absorbed_attention_bf16" : "dsv3rt_mla_absorbed_attention",
                       {op.getQNope(), op.getQRope(), op.getWUk(), op.getWUv(), op.getCache(),
                        op.getRows(), op.getPositions(), s});
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Routed experts: runtime/kernels/GroupedGemm.cpp
//===----------------------------------------------------------------------===//

/// dsv3.moe_dispatch: the counting sort of the (token, slot) pairs by expert
/// is a kernel; the gather of their rows stays a generic.
struct SelectMoEDispatch : OpRewritePattern<MoEDispatchOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoEDispatchOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    ResultRange order = callUkernel(
        rw, loc, "dsv3rt_moe_dispatch_order",
        {op.getExpertIds(), i64Const(rw, loc, op.getNumExperts())},
        TypeRange{op.getRowOfSlot().getType(), op.getSlotOfRow().getType(),
                  op.getOffsets().getType()});
    Value rows = gatherDispatchedRows(rw, loc, op.getX(), order[1],
                                      op.getExpertIds().getType().getDimSize(1));
    rw.replaceOp(op, {rows, order[0], order[1], order[2]});
    return success();
  }
};

/// out[r] = x[r] w[e]^T over the rows of group e.
Value groupedMatmulNT(OpBuilder &b, Location loc, Value x, Value w,
                      Value offsets, Type resultType) {
  return callUkernel(b, loc, "dsv3rt_grouped_matmul_nt_f32", {x, w, offsets},
                     resultType)[0];
}

struct SelectGroupedLinear : OpRewritePattern<GroupedLinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GroupedLinearOp op, PatternRewriter &rw) const override {
    rw.replaceOp(op, groupedMatmulNT(rw, op.getLoc(), op.getX(), op.getWeight(),
                                     op.getOffsets(), op.getType()));
    return success();
  }
};

/// dx[r] = dy[r] w[e]: the same kernel on the experts' transposed weights.
struct SelectGroupedLinearGradInput : OpRewritePattern<GroupedLinearGradInputOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GroupedLinearGradInputOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    auto ws = op.getWeight().getType().getShape();
    Value wT = lb.generic1({op.getWeight()}, lb.empty({ws[0], ws[2], ws[1]}),
                           {lb.map(3, {0, 2, 1}), lb.identity(3)}, lb.iters(3),
                           [](OpBuilder &nb, Location l, ValueRange a) {
                             linalg::YieldOp::create(nb, l, ValueRange{a[0]});
                           });
    rw.replaceOp(op, groupedMatmulNT(rw, op.getLoc(), op.getDy(), wT,
                                     op.getOffsets(), op.getType()));
    return success();
  }
};

/// dW[e] = dy[rows of e]^T x[rows of e]: both operands transposed so each
/// group's reduction runs along contiguous memory.
struct SelectGroupedLinearGradWeight : OpRewritePattern<GroupedLinearGradWeightOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GroupedLinearGradWeightOp op,
                                PatternRewriter &rw) const override {
    LinalgBuilder lb(rw, op.getLoc());
    Value dyT = lb.transpose2D(op.getDy()), xT = lb.transpose2D(op.getX());
    replaceWithUkernel(rw, op, "dsv3rt_grouped_matmul_nt_f32_split_k",
                       {dyT, xT, op.getOffsets()});
    return success();
  }
};

//===----------------------------------------------------------------------===//
// FP8: runtime/kernels/FP8.h, PackedGemm.cpp, GroupedGemm.cpp
//===----------------------------------------------------------------------===//

/// The runtime's format numbering (rt::FP8Format).
int64_t formatCode(Type codes) {
  return isa<Float8E4M3FNType>(cast<ShapedType>(codes).getElementType()) ? 0 : 1;
}

/// Quantization (bit-exact codes): one kernel per layout (matrices,
/// per-expert stacks, row groups); tile, format and scale rounding as i64.
struct SelectFP8Quantize : OpRewritePattern<FP8QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8QuantizeOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto tile = op.getTile();
    StringRef kernel = "dsv3rt_fp8_quantize";
    SmallVector<Value> ins = {op.getX()};
    if (Value groups = op.getGroups()) {
      kernel = "dsv3rt_fp8_quantize_grouped";
      ins.push_back(groups);
    } else if (cast<RankedTensorType>(op.getX().getType()).getRank() == 3) {
      kernel = "dsv3rt_fp8_quantize_stacked";
    }
    ins.append({i64Const(rw, loc, tile[0]), i64Const(rw, loc, tile[1]),
                i64Const(rw, loc, formatCode(op.getCodes().getType())),
                i64Const(rw, loc, op.getPowerOfTwoScales())});
    replaceWithUkernel(rw, op, kernel, ins);
    return success();
  }
};

struct SelectFP8Dequantize : OpRewritePattern<FP8DequantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8DequantizeOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto tile = op.getTile();
    replaceWithUkernel(rw, op, "dsv3rt_fp8_dequantize",
                       {op.getCodes(), op.getScales(), i64Const(rw, loc, tile[0]),
                        i64Const(rw, loc, tile[1]),
                        i64Const(rw, loc, formatCode(op.getCodes().getType()))});
    return success();
  }
};

/// The block-scaled GEMMs (codes widened to BF16, BF16 dot products, FP32
/// promotion per 128-wide K block): codes and scales of both operands, the
/// dispatch offsets of the grouped ones, then layout flags and formats.
template <class GemmOp> struct SelectFP8GemmFamily : OpRewritePattern<GemmOp> {
  SelectFP8GemmFamily(MLIRContext *ctx, StringRef kernel)
      : OpRewritePattern<GemmOp>(ctx), kernel(kernel) {}
  LogicalResult matchAndRewrite(GemmOp op, PatternRewriter &rw) const override {
    // The kernels promote every 128 products (the recipe's interval).
    if (op.getPromotionInterval() != 128)
      return failure();
    Location loc = op.getLoc();
    SmallVector<Value> ins = {op.getA(), op.getAScales(), op.getB(), op.getBScales()};
    if constexpr (std::is_same_v<GemmOp, FP8GemmOp>)
      ins.push_back(i64Const(rw, loc, op.getTransposeA()));
    else
      ins.push_back(op.getOffsets());
    if constexpr (!std::is_same_v<GemmOp, FP8KGroupedGemmOp>)
      ins.push_back(i64Const(rw, loc, op.getTransposeB()));
    ins.push_back(i64Const(rw, loc, formatCode(op.getA().getType())));
    ins.push_back(i64Const(rw, loc, formatCode(op.getB().getType())));
    replaceWithUkernel(rw, op, kernel, ins);
    return success();
  }
  std::string kernel;
};

struct DSV3CPUSelectUkernelsPass
    : dsv3::impl::DSV3CPUSelectUkernelsPassBase<DSV3CPUSelectUkernelsPass> {
  using Base::Base;
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    RewritePatternSet patterns(ctx);
    if (attention)
      patterns.add<SelectMLACore, SelectMLACoreGrad, SelectMLAAbsorbedCore>(ctx);
    if (moe)
      patterns.add<SelectMoEDispatch, SelectGroupedLinear,
                   SelectGroupedLinearGradInput, SelectGroupedLinearGradWeight>(ctx);
    if (fp8) {
      patterns.add<SelectFP8Quantize, SelectFP8Dequantize>(ctx);
      patterns.add<SelectFP8GemmFamily<FP8GemmOp>>(ctx, "dsv3rt_fp8_gemm");
      patterns.add<SelectFP8GemmFamily<FP8MGroupedGemmOp>>(ctx, "dsv3rt_fp8_m_grouped_gemm");
      patterns.add<SelectFP8GemmFamily<FP8KGroupedGemmOp>>(ctx, "dsv3rt_fp8_k_grouped_gemm");
    }
    GreedyRewriteConfig config;
    config.enableFolding(false);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns), config)))
      signalPassFailure();
  }
};

} // namespace
