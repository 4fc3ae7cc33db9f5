//===- FP8.cpp - lowering of the FP8 ops to runtime microkernels ----------===//
//
// Part of convert-dsv3-to-linalg. Quantization (bit-exact codes) and the
// block-scaled GEMMs (the reference's promotion order) are runtime kernels
// (runtime/kernels/FP8.h, PackedGemm.cpp, GroupedGemm.cpp for the experts);
// they become `dsv3.ukernel` ops in destination-passing style, which
// bufferize like linalg ops and turn into calls in dsv3-linalg-to-ukernel.
// Scalar arguments (tiles, formats, layouts) are i64.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"

#include "mlir/Dialect/Bufferization/IR/BufferizableOpInterface.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Bufferization/IR/DstBufferizableOpInterfaceImpl.h"

using namespace mlir;
using namespace dsv3;
using namespace dsv3::lowering;

namespace {

/// The runtime's format numbering (rt::FP8Format).
int64_t formatCode(Type codes) {
  return isa<Float8E4M3FNType>(cast<ShapedType>(codes).getElementType()) ? 0 : 1;
}

struct LowerFP8Quantize : OpRewritePattern<FP8QuantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8QuantizeOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto tile = op.getTile();
    // One kernel per layout: matrices, per-expert stacks, row groups.
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
    rw.replaceOp(op, callUkernel(rw, loc, kernel, ins, op->getResultTypes()));
    return success();
  }
};

/// Replaces `op` with a call of `kernel` on `ins`.
void replaceWithUkernel(PatternRewriter &rw, Operation *op, StringRef kernel,
                        ValueRange ins) {
  rw.replaceOp(op, callUkernel(rw, op->getLoc(), kernel, ins, op->getResultTypes()));
}

struct LowerFP8Dequantize : OpRewritePattern<FP8DequantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FP8DequantizeOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto tile = op.getTile();
    replaceWithUkernel(rw, op, "dsv3rt_fp8_dequantize",
                       {op.getCodes(), op.getScales(), i64Const(rw, loc, tile[0]),
                        i64Const(rw, loc, tile[1]),
                        i64Const(rw, loc, formatCode(op.getCodes().getType()))});
    return success();
  }
};

/// The block-scaled GEMMs: codes and scales of both operands, the dispatch
/// offsets of the grouped ones, then layout flags and the two formats.
template <class GemmOp> struct LowerFP8GemmFamily : OpRewritePattern<GemmOp> {
  LowerFP8GemmFamily(MLIRContext *ctx, StringRef kernel)
      : OpRewritePattern<GemmOp>(ctx), kernel(kernel) {}
  LogicalResult matchAndRewrite(GemmOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    SmallVector<Value> ins = {op.getA(), op.getAScales(), op.getB(),
                              op.getBScales()};
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

/// One-shot bufferization of dsv3.ukernel: the same op on the operands'
/// buffers. Kernels overwrite their outputs entirely, so outputs are not
/// read (no copy of a destination's old contents is needed).
struct UkernelBufferization
    : bufferization::DstBufferizableOpInterfaceExternalModel<UkernelBufferization,
                                                             UkernelOp> {
  bool bufferizesToMemoryRead(Operation *op, OpOperand &operand,
                              const bufferization::AnalysisState &) const {
    return !cast<DestinationStyleOpInterface>(op).isDpsInit(&operand);
  }

  LogicalResult bufferize(Operation *op, RewriterBase &rw,
                          const bufferization::BufferizationOptions &options,
                          bufferization::BufferizationState &state) const {
    auto u = cast<UkernelOp>(op);
    auto bufferOf = [&](Value v) -> FailureOr<Value> {
      if (!isa<TensorType>(v.getType()))
        return v;
      return bufferization::getBuffer(rw, v, options, state);
    };
    SmallVector<Value> ins, outs;
    for (Value v : u.getInputs()) {
      FailureOr<Value> buf = bufferOf(v);
      if (failed(buf))
        return failure();
      ins.push_back(*buf);
    }
    for (Value v : u.getOutputs()) {
      FailureOr<Value> buf = bufferOf(v);
      if (failed(buf))
        return failure();
      outs.push_back(*buf);
    }
    rw.setInsertionPoint(op);
    UkernelOp::create(rw, op->getLoc(), TypeRange{}, u.getKernelAttr(), ins, outs);
    bufferization::replaceOpWithBufferizedValues(rw, op, outs);
    return success();
  }
};

} // namespace

void dsv3::lowering::populateFP8LoweringPatterns(RewritePatternSet &patterns) {
  MLIRContext *ctx = patterns.getContext();
  patterns.add<LowerFP8Quantize, LowerFP8Dequantize>(ctx);
  patterns.add<LowerFP8GemmFamily<FP8GemmOp>>(ctx, "dsv3rt_fp8_gemm");
  patterns.add<LowerFP8GemmFamily<FP8MGroupedGemmOp>>(ctx, "dsv3rt_fp8_m_grouped_gemm");
  patterns.add<LowerFP8GemmFamily<FP8KGroupedGemmOp>>(ctx, "dsv3rt_fp8_k_grouped_gemm");
}

void dsv3::lowering::registerUkernelBufferization(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, DSV3Dialect *) {
    UkernelOp::attachInterface<UkernelBufferization>(*ctx);
  });
}
