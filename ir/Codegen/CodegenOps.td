//===- CodegenOps.td - the dsv3_codegen dialect ------------*- tablegen -*-===//
//
// Ops that exist only on the way to machine code for one target: what a
// target's kernel-selection pass (lowering/CPU/SelectUkernels.cpp for the
// CPU) puts in place of dsv3 ops it has a hand-written kernel for. The dsv3
// dialect knows nothing of them; they know nothing of dsv3.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_CODEGEN_CODEGENOPS_TD
#define DSV3_IR_CODEGEN_CODEGENOPS_TD

include "mlir/IR/OpBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/DestinationStyleOpInterface.td"

def Codegen_Dialect : Dialect {
  let name = "dsv3_codegen";
  let cppNamespace = "::dsv3::codegen";
  let summary = "target code generation: calls of hand-written kernels";
  let description = [{
    Target-specific ops between kernel selection and the LLVM dialect. A
    model's portable meaning stays in `dsv3` and its reference lowering to
    linalg; a target replaces the ops it runs better by hand with
    `dsv3_codegen.ukernel` calls of its runtime's kernels.
  }];
  let usePropertiesForAttributes = 1;
}

def Codegen_UkernelOp : Op<Codegen_Dialect, "ukernel", [AttrSizedOperandSegments,
    DestinationStyleOpInterface,
    DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "call of a runtime microkernel, in destination-passing style";
  let description = [{
    As IREE's ukernel ops: `ins` are read, `outs` are overwritten entirely.
    On tensors it returns the new values of `outs`; one-shot bufferization
    turns it into the memref form, which `dsv3-cpu-lower-ukernels` turns
    into a call of `_mlir_ciface_<kernel>` with every memref as a strided
    descriptor and every scalar passed by value. A `collective` call talks
    to other ranks (runtime/comm): it has an effect even on tensors, so it
    is never erased, merged with another or reordered against another
    collective (every rank must issue the same ones in the same order).

    ```mlir
    %q, %s = dsv3_codegen.ukernel "dsv3rt_fp8_quantize" ins(%x, %c1, %c128 : tensor<64x256xf32>, i64, i64)
             outs(%q0, %s0 : tensor<64x256xf8E4M3FN>, tensor<64x2xf32>) -> tensor<64x256xf8E4M3FN>, tensor<64x2xf32>
    ```
  }];
  let arguments = (ins StrAttr:$kernel, Variadic<AnyType>:$inputs,
                       Variadic<AnyShaped>:$outputs, UnitAttr:$collective);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let assemblyFormat = [{
    $kernel (`ins` `(` $inputs^ `:` type($inputs) `)`)?
    `outs` `(` $outputs `:` type($outputs) `)` attr-dict (`->` type($results)^)?
  }];
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() { return getOutputsMutable(); }
  }];
  let hasVerifier = 1;
}

#endif // DSV3_IR_CODEGEN_CODEGENOPS_TD
