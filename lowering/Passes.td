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
    The reference lowering: every tensor-level dsv3 op becomes
    linalg.generic ops on tensors (GEMMs as plain multiply-accumulate
    contractions), plus scf loops for the router's top-k selection and the
    group tables of the routed experts. `dsv3.param` is left for
    `dsv3-materialize-params`; ops a target already replaced by kernel calls
    are not dsv3 ops any more. Run `dsv3-decompose` first.
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::scf::SCFDialect"];
}

def DSV3LowerCommPass : Pass<"dsv3-lower-comm", "::mlir::ModuleOp"> {
  let summary = "Lower communication ops to calls of the runtime's communication library";
  let description = [{
    `dsv3.all_reduce`, `all_gather`, `reduce_scatter` and `all_to_all` (and
    their `*_start`/`dsv3.wait` forms, completed at the start for now)
    become `collective` `dsv3_codegen.ukernel` calls of
    `dsv3rt_<op>_<f32|i64>` (runtime/comm/CommKernels.h) on tensors
    collapsed to two dimensions, with the group passed by number.
    `dsv3.rank_rows` and `dsv3.rank_rows_grad` become slices at the offset
    the runtime's rank gives (`dsv3rt_comm_rank`). A
    `dsv3.pipeline_schedule` is removed: the host's pipeline executor runs
    it. Every target runs it before its kernel selection.
  }];
  let dependentDialects = ["::dsv3::codegen::CodegenDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

def DSV3CPUSelectUkernelsPass : Pass<"dsv3-cpu-select-ukernels"> {
  let summary = "Replace tensor-level dsv3 ops that have a CPU runtime kernel with dsv3_codegen.ukernel calls";
  let description = [{
    CPU kernel selection, run before `convert-dsv3-to-linalg`: `mla_core`
    and its gradient, `moe_dispatch`'s sort, the grouped linears and their
    gradients, and the FP8 quantization and block-scaled GEMMs (promotion
    interval 128) become `dsv3_codegen.ukernel` ops on tensors in
    destination-passing style. Ops are matched by kind and types; whatever
    is not selected (a family turned off, an unsupported attribute) keeps
    its reference lowering to linalg.
  }];
  let options = [
    Option<"attention", "attention", "bool", "true", "Select the MLA attention kernels">,
    Option<"moe", "moe", "bool", "true", "Select the dispatch sort and grouped-GEMM kernels">,
    Option<"fp8", "fp8", "bool", "true", "Select the FP8 quantization and GEMM kernels">
  ];
  let dependentDialects = ["::dsv3::codegen::CodegenDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::arith::ArithDialect"];
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
    recorded in the module attribute `dsv3.param_layout` (name, offset,
    shape, role) for the runtime to fill the buffer, and each entry point's
    typed signature in its attributes `dsv3.inputs` (name from the
    `dsv3.input` argument attribute, element type, shape) and `dsv3.outputs`
    (name, role and parameter from the `dsv3.output*` result attributes,
    element type, shape).
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", "16",
           "Alignment of each parameter in floats">
  ];
  let dependentDialects = ["::mlir::memref::MemRefDialect",
                           "::mlir::bufferization::BufferizationDialect"];
}

def DSV3UnshareInitsPass : Pass<"dsv3-unshare-inits"> {
  let summary = "Give each destination-passing op its own `tensor.empty` (or zero-filled empty) init";
  let description = [{
    CSE merges identical inits: two GEMMs that start from the same
    `linalg.fill(tensor.empty)`. Empty-tensor elimination then follows the
    first GEMM's init back to the empty and replaces it with the caller's
    output buffer, so the second GEMM also starts in that buffer and
    bufferization can end up writing one result over the other. Cloning the
    init chain per use (it is only an allocation and a fill, which every
    user needs anyway) keeps each output's buffer to itself. Runs right
    before `eliminate-empty-tensors`.
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect"];
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

def DSV3CPULowerUkernelsPass : Pass<"dsv3-cpu-lower-ukernels", "::mlir::ModuleOp"> {
  let summary = "Replace bufferized dsv3_codegen.ukernel ops and float32 GEMMs with runtime kernel calls";
  let description = [{
    After bufferization, every `dsv3_codegen.ukernel "<name>"` on memrefs
    becomes `func.call @<name>(...)` with memrefs cast to fully dynamic
    strided layouts (the runtime reads `_mlir_ciface_<name>` descriptors)
    and scalars passed by value. With `gemm` (the default), each linalg op
    with the structure of a float32 GEMM `C[m,n] += A[m,k] B[n,k]` (maps,
    loop kinds and a multiply-add body; no tag) becomes
    `func.call @dsv3rt_matmul_nt_f32(A, B, C)`; the runtime kernel is
    blocked, vectorised and parallel (TBB).
  }];
  let options = [
    Option<"gemm", "gemm", "bool", "true",
           "Also call the FP32 GEMM microkernel for GEMM-shaped linalg ops (else they stay loops)">
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
