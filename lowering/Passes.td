//===- Passes.td - conversions out of the dsv3 dialect ---*- tablegen -*-===//
//
// Conversions from dsv3 to upstream dialects and the buffer-level passes of
// the CPU pipeline, in pipeline order.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_LOWERING_PASSES_TD
#define DSV3_LOWERING_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertDSV3ToLinalgPass : Pass<"convert-dsv3-to-linalg"> {
  let summary = "Lower tensor-level dsv3 ops to linalg/tensor/arith/math/scf";
  let description = [{
    Every tensor-level dsv3 op becomes linalg.generic ops on tensors (GEMMs
    are tagged `dsv3.matmul_nt`), plus scf loops for the router's top-k
    selection. `dsv3.param` is left for `dsv3-materialize-params`. Run
    `dsv3-decompose` first.
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect"];
}

def DSV3MaterializeParamsPass : Pass<"dsv3-materialize-params", "::mlir::ModuleOp"> {
  let summary = "Give every dsv3.param a slice of one flat parameter buffer and switch entry points to the memref calling convention";
  let description = [{
    Each public function `@f(tensors...) -> (tensors...)` becomes
    `@f(%params: memref<Nxf32>, inputs..., outputs...)` with
    `llvm.emit_c_interface`: inputs are read through
    `bufferization.to_tensor`, results written with
    `bufferization.materialize_in_destination`. Parameters are laid out in
    first-use order, each aligned to `alignment` floats; the layout is
    recorded in the module attribute `dsv3.param_layout` (name, offset, shape)
    for the runtime to fill the buffer.
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", "16",
           "Alignment of each parameter in floats">
  ];
  let dependentDialects = ["::mlir::memref::MemRefDialect",
                           "::mlir::bufferization::BufferizationDialect"];
}

def DSV3FuseElementwisePass : Pass<"dsv3-fuse-elementwise"> {
  let summary = "Fuse elementwise linalg producers into consumers that read each element once";
  let description = [{
    Upstream elementwise fusion, restricted to consumer operands whose
    indexing map is a permutation of all loops: fusing into a GEMM would
    recompute the producer once per output column.
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect"];
}

def DSV3LinalgToUkernelPass : Pass<"dsv3-linalg-to-ukernel", "::mlir::ModuleOp"> {
  let summary = "Replace bufferized dsv3.ukernel ops and tagged GEMM generics with runtime kernel calls";
  let description = [{
    After bufferization, every `dsv3.ukernel "<name>"` on memrefs becomes
    `func.call @<name>(...)` with memrefs cast to fully dynamic strided
    layouts (the runtime reads `_mlir_ciface_<name>` descriptors) and
    scalars passed by value. With `gemm` (the default), each `linalg.generic`
    tagged `dsv3.matmul_nt` whose maps are `(m,k), (n,k) -> (m,n)` becomes
    `func.call @dsv3rt_matmul_nt_f32(A, B, C)` (C += A B^T); the runtime
    kernel is blocked, vectorised and parallel (TBB).
  }];
  let options = [
    Option<"gemm", "gemm", "bool", "true",
           "Also call the FP32 GEMM microkernel for tagged generics (else they stay loops)">
  ];
  let dependentDialects = ["::mlir::func::FuncDialect",
                           "::mlir::memref::MemRefDialect"];
}

def DSV3OutlineLoopNestsPass : Pass<"dsv3-outline-loop-nests", "::mlir::ModuleOp"> {
  let summary = "Outline each top-level loop nest of an entry point into its own function";
  let description = [{
    After linalg is lowered to loops, a whole model is one function with
    thousands of loop nests, and LLVM's optimiser and code generator are
    superlinear in function size (the tiny model's gradient took 47 s to JIT
    at O3 as one function). Each top-level `scf.for` nest becomes a private
    `noinline` function, called in place, so compile time grows linearly.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect", "::mlir::scf::SCFDialect"];
}

#endif // DSV3_LOWERING_PASSES_TD
