//===- DSV3Interfaces.td - dsv3 op interfaces ------------*- tablegen -*-===//
//
// Interfaces through which transformations learn what an op means without
// knowing every op: a new op (a collective, a cache update) joins a
// transformation by implementing the interface, not by editing the pass.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3INTERFACES_TD
#define DSV3_IR_DSV3INTERFACES_TD

include "mlir/IR/OpBase.td"

def DSV3_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::dsv3";
  let description = [{
    The reverse-mode gradient rule of an op, used by `dsv3-autodiff`. Given
    the gradients of the op's results (`sweep.gradient(result)`, null for a
    result off the path to the objective), the rule builds the ops that
    compute its operands' gradients at the builder's insertion point and
    hands each to `sweep.accumulate(operand, gradient)`, which sums over
    uses. Weighted ops emit their input (B) and weight (W) gradients as
    separate ops. The rules of the dsv3 ops, and of the arith and tensor ops
    the decomposition produces, are attached by the autodiff pass
    (passes/Autodiff/Rules.cpp), so the dialect stays free of it.
  }];
  let methods = [
    InterfaceMethod<"Builds the gradients of the operands from those of the results.",
      "::llvm::LogicalResult", "emitGradient",
      (ins "::mlir::OpBuilder &":$builder, "::dsv3::GradientSweep &":$sweep)>
  ];
}

#endif // DSV3_IR_DSV3INTERFACES_TD
