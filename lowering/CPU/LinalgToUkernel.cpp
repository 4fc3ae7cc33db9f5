//===- LinalgToUkernel.cpp - dsv3-linalg-to-ukernel -----------------------===//
//
// After bufferization: dsv3.ukernel ops (FP8 quantization and GEMMs) and the
// GEMMs tagged by convert-dsv3-to-linalg become calls to the runtime's
// hand-written kernels (runtime/kernels), as IREE's ukernels. A tagged
// generic that does not match exactly stays a loop nest, which is correct.
//
//===----------------------------------------------------------------------===//
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/Passes.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3LINALGTOUKERNELPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;

namespace {

constexpr llvm::StringLiteral kMatmulSymbol = "dsv3rt_matmul_nt_f32";

bool isMatmulNT(linalg::GenericOp op) {
  if (!op->hasAttr(dsv3::lowering::kMatmulNTAttr) ||
      !op.hasPureBufferSemantics() || op.getNumDpsInputs() != 2 ||
      op.getNumDpsInits() != 1)
    return false;
  MLIRContext *ctx = op.getContext();
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  SmallVector<AffineMap> expected = {
      AffineMap::get(3, 0, {d(0), d(2)}, ctx),
      AffineMap::get(3, 0, {d(1), d(2)}, ctx),
      AffineMap::get(3, 0, {d(0), d(1)}, ctx)};
  return op.getIndexingMapsArray() == expected;
}

/// memref<...xT> -> memref<?x...xT, strided<[?, ...], offset: ?>>: the one
/// descriptor type per rank and element type the runtime entry points take.
MemRefType anyLayout(MemRefType t) {
  int64_t dyn = ShapedType::kDynamic;
  SmallVector<int64_t> shape(t.getRank(), dyn), strides(t.getRank(), dyn);
  return MemRefType::get(shape, t.getElementType(),
                         StridedLayoutAttr::get(t.getContext(), dyn, strides));
}

func::FuncOp declareKernel(ModuleOp module, StringRef name, FunctionType type) {
  if (auto f = module.lookupSymbol<func::FuncOp>(name))
    return f;
  OpBuilder mb = OpBuilder::atBlockBegin(module.getBody());
  auto f = func::FuncOp::create(mb, module.getLoc(), name, type);
  f.setPrivate();
  f->setAttr("llvm.emit_c_interface", UnitAttr::get(module.getContext()));
  return f;
}

/// Casts memref operands to the kernel ABI's layout and calls `name`.
LogicalResult callKernel(ModuleOp module, Operation *op, StringRef name,
                         ValueRange operands) {
  OpBuilder b(op);
  SmallVector<Value> args;
  SmallVector<Type> types;
  for (Value v : operands) {
    if (auto m = dyn_cast<MemRefType>(v.getType()))
      v = memref::CastOp::create(b, op->getLoc(), anyLayout(m), v);
    args.push_back(v);
    types.push_back(v.getType());
  }
  auto type = FunctionType::get(module.getContext(), types, {});
  func::FuncOp callee = declareKernel(module, name, type);
  if (callee.getFunctionType() != type)
    return op->emitOpError() << "kernel '" << name
                             << "' is called with two different signatures";
  func::CallOp::create(b, op->getLoc(), callee, args);
  op->erase();
  return success();
}

struct DSV3LinalgToUkernelPass
    : dsv3::impl::DSV3LinalgToUkernelPassBase<DSV3LinalgToUkernelPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<dsv3::UkernelOp> kernels;
    SmallVector<linalg::GenericOp> gemms;
    module.walk([&](Operation *op) {
      if (auto u = dyn_cast<dsv3::UkernelOp>(op))
        kernels.push_back(u);
      else if (auto g = dyn_cast<linalg::GenericOp>(op); g && gemm && isMatmulNT(g))
        gemms.push_back(g);
    });
    for (dsv3::UkernelOp u : kernels) {
      if (!u.getResults().empty()) {
        u.emitOpError() << "must be bufferized before dsv3-linalg-to-ukernel";
        return signalPassFailure();
      }
      SmallVector<Value> operands(u.getInputs());
      llvm::append_range(operands, u.getOutputs());
      if (failed(callKernel(module, u, u.getKernel(), operands)))
        return signalPassFailure();
    }
    for (linalg::GenericOp op : gemms)
      if (failed(callKernel(module, op, kMatmulSymbol, op->getOperands())))
        return signalPassFailure();
  }
};

} // namespace
