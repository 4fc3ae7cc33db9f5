//===- LowerUkernels.cpp - dsv3-cpu-lower-ukernels ------------------------===//
//
// After bufferization: dsv3_codegen.ukernel ops (chosen by
// dsv3-cpu-select-ukernels) and every linalg op with the structure of a
// float32 `C += A B^T` GEMM become calls to the runtime's hand-written
// kernels (runtime/kernels), as IREE's ukernels. The GEMM is recognised by
// its maps, loops and body (isMatmulNTF32), not by who produced it; anything
// else stays a loop nest, which is correct.
//
//===----------------------------------------------------------------------===//
#include "ir/Codegen/CodegenDialect.h"
#include "lowering/CPU/Ukernels.h"
#include "lowering/Passes.h"

namespace dsv3 {
#define GEN_PASS_DEF_DSV3CPULOWERUKERNELSPASS
#include "lowering/Passes.h.inc"
} // namespace dsv3

using namespace mlir;

namespace {

constexpr llvm::StringLiteral kMatmulSymbol = "dsv3rt_matmul_nt_f32";

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

struct DSV3CPULowerUkernelsPass
    : dsv3::impl::DSV3CPULowerUkernelsPassBase<DSV3CPULowerUkernelsPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<dsv3::codegen::UkernelOp> kernels;
    SmallVector<linalg::LinalgOp> gemms;
    module.walk([&](Operation *op) {
      if (auto u = dyn_cast<dsv3::codegen::UkernelOp>(op))
        kernels.push_back(u);
      else if (auto g = dyn_cast<linalg::LinalgOp>(op);
               g && gemm && g.hasPureBufferSemantics() && dsv3::lowering::isMatmulNTF32(g))
        gemms.push_back(g);
    });
    for (dsv3::codegen::UkernelOp u : kernels) {
      if (!u.getResults().empty()) {
        u.emitOpError() << "must be bufferized before dsv3-cpu-lower-ukernels";
        return signalPassFailure();
      }
      SmallVector<Value> operands(u.getInputs());
      llvm::append_range(operands, u.getOutputs());
      if (failed(callKernel(module, u, u.getKernel(), operands)))
        return signalPassFailure();
    }
    for (linalg::LinalgOp op : gemms)
      if (failed(callKernel(module, op, kMatmulSymbol, op->getOperands())))
        return signalPassFailure();
  }
};

} // namespace
