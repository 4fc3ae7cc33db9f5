//===- Passes.td - passes on dsv3 IR ---------------------*- tablegen -*-===//
//
// Transformations that keep the program in the dsv3 dialect. Conversions out
// of it are declared in lowering/Passes.td.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_PASSES_PASSES_TD
#define DSV3_PASSES_PASSES_TD

include "mlir/Pass/PassBase.td"

def DSV3DecomposePass : Pass<"dsv3-decompose"> {
  let summary = "Expand model-structure ops into tensor-level dsv3 ops";
  let description = [{
    Rewrites `dsv3.mla_attention`, `dsv3.mlp`, `dsv3.moe` and
    `dsv3.mtp_input` into `dsv3.linear`, `dsv3.rms_norm`, `dsv3.rope`,
    `dsv3.mla_core`, `dsv3.swiglu`, `dsv3.moe_router`, `dsv3.moe_experts` and
    tensor reshapes/slices. After this pass the IR is what
    `dsv3c compile --emit=tensor` prints.
  }];
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect"];
}

def DSV3AutodiffPass : Pass<"dsv3-autodiff", "::mlir::ModuleOp"> {
  let summary = "Reverse-mode differentiation of a tensor-level dsv3 function";
  let description = [{
    Builds `@<function>_grad`: the forward computation followed by its
    reverse sweep, returning the original outputs and, for every parameter
    the objective depends on, `grad.<parameter name>` (summed over all uses).
    Ops with weights get separate input-gradient (B) and weight-gradient (W)
    ops. The chosen expert ids and the routing bias are not differentiated.
    Run after `dsv3-decompose`.
  }];
  let options = [
    Option<"function", "function", "std::string", "\"forward\"",
           "Function to differentiate">,
    Option<"objective", "objective", "std::string", "\"total_loss\"",
           "Name (dsv3.output) of the scalar result to differentiate">,
    Option<"keepForward", "keep-forward", "bool", "false",
           "Keep the original function next to the gradient function">
  ];
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

#endif // DSV3_PASSES_PASSES_TD
