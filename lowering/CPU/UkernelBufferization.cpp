//===- UkernelBufferization.cpp - bufferizing dsv3_codegen.ukernel --------===//
//
// The external bufferization model of the kernel-call op, and the structural
// GEMM match both CPU passes use (see Ukernels.h).
//
//===----------------------------------------------------------------------===//
#include "lowering/CPU/Ukernels.h"

#include "ir/Codegen/CodegenDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/BufferizableOpInterface.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Bufferization/IR/DstBufferizableOpInterfaceImpl.h"

using namespace mlir;
using dsv3::codegen::UkernelOp;

namespace {

/// The same op on the operands' buffers. Kernels overwrite their outputs
/// entirely, so outputs are not read (no copy of a destination's old
/// contents is needed).
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
    auto buffersOf = [&](ValueRange values, SmallVector<Value> &out) {
      for (Value v : values) {
        if (!isa<TensorType>(v.getType())) {
          out.push_back(v);
          continue;
        }
        FailureOr<Value> buf = bufferization::getBuffer(rw, v, options, state);
        if (failed(buf))
          return failure();
        out.push_back(*buf);
      }
      return success();
    };
    SmallVector<Value> ins, outs;
    if (failed(buffersOf(u.getInputs(), ins)) || failed(buffersOf(u.getOutputs(), outs)))
      return failure();
    rw.setInsertionPoint(op);
    UkernelOp::create(rw, op->getLoc(), TypeRange{}, u.getKernelAttr(), ins, outs,
                      u.getCollectiveAttr());
    bufferization::replaceOpWithBufferizedValues(rw, op, outs);
    return success();
  }
};

} // namespace

bool dsv3::lowering::isMatmulNTF32(linalg::LinalgOp op) {
  if (op.getNumDpsInputs() != 2 || op.getNumDpsInits() != 1 ||
      op.getNumLoops() != 3 || !op->getRegion(0).hasOneBlock())
    return false;
  for (OpOperand &operand : op->getOpOperands()) {
    auto shaped = dyn_cast<ShapedType>(operand.get().getType());
    if (!shaped || !shaped.getElementType().isF32())
      return false;
  }
  MLIRContext *ctx = op.getContext();
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  SmallVector<AffineMap> expected = {AffineMap::get(3, 0, {d(0), d(2)}, ctx),
                                     AffineMap::get(3, 0, {d(1), d(2)}, ctx),
                                     AffineMap::get(3, 0, {d(0), d(1)}, ctx)};
  if (op.getIndexingMapsArray() != expected)
    return false;
  auto iterators = op.getIteratorTypesArray();
  if (iterators[0] != utils::IteratorType::parallel ||
      iterators[1] != utils::IteratorType::parallel ||
      iterators[2] != utils::IteratorType::reduction)
    return false;
  // Body: %p = mulf %a, %b ; %s = addf %c, %p (either order) ; yield %s.
  Block &body = op->getRegion(0).front();
  if (body.getOperations().size() != 3)
    return false;
  auto yield = dyn_cast<linalg::YieldOp>(body.getTerminator());
  auto add = yield && yield.getNumOperands() == 1
                 ? yield.getOperand(0).getDefiningOp<arith::AddFOp>()
                 : nullptr;
  if (!add)
    return false;
  Value a = body.getArgument(0), b = body.getArgument(1), c = body.getArgument(2);
  auto isProduct = [&](Value v) {
    auto mul = v.getDefiningOp<arith::MulFOp>();
    return mul && ((mul.getLhs() == a && mul.getRhs() == b) ||
                   (mul.getLhs() == b && mul.getRhs() == a));
  };
  return (add.getLhs() == c && isProduct(add.getRhs())) ||
         (add.getRhs() == c && isProduct(add.getLhs()));
}

void dsv3::lowering::registerUkernelBufferization(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, codegen::CodegenDialect *) {
    UkernelOp::attachInterface<UkernelBufferization>(*ctx);
  });
}
