//===- LinalgToUkernel.cpp - dsv3-linalg-to-ukernel -----------------------===//
//
// After bufferization: GEMMs tagged by convert-dsv3-to-linalg become calls to
// the runtime's blocked, TBB-parallel microkernel (runtime/kernels/Gemm.cpp),
// the one hand-written kernel family the JIT code calls, as IREE's ukernels.
// Anything that does not match exactly stays a loop nest, which is correct.
//
//===----------------------------------------------------------------------===//
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"
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

struct DSV3LinalgToUkernelPass
    : dsv3::impl::DSV3LinalgToUkernelPassBase<DSV3LinalgToUkernelPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    int64_t dyn = ShapedType::kDynamic;
    auto anyMatrix = MemRefType::get(
        {dyn, dyn}, Float32Type::get(ctx),
        StridedLayoutAttr::get(ctx, dyn, {dyn, dyn}));

    SmallVector<linalg::GenericOp> gemms;
    module.walk([&](linalg::GenericOp op) {
      if (isMatmulNT(op))
        gemms.push_back(op);
    });
    if (gemms.empty())
      return;

    auto callee = module.lookupSymbol<func::FuncOp>(kMatmulSymbol);
    if (!callee) {
      OpBuilder mb = OpBuilder::atBlockBegin(module.getBody());
      callee = func::FuncOp::create(
          mb, module.getLoc(), kMatmulSymbol,
          FunctionType::get(ctx, {anyMatrix, anyMatrix, anyMatrix}, {}));
      callee.setPrivate();
      callee->setAttr("llvm.emit_c_interface", UnitAttr::get(ctx));
    }
    for (linalg::GenericOp op : gemms) {
      OpBuilder b(op);
      SmallVector<Value> args;
      for (Value v : op->getOperands())
        args.push_back(memref::CastOp::create(b, op.getLoc(), anyMatrix, v));
      func::CallOp::create(b, op.getLoc(), callee, args);
      op.erase();
    }
  }
};

} // namespace
