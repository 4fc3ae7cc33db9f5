//===- DSV3Base.td - dsv3 dialect record and op base class -*- tablegen -*-===//
//
// The dialect that every dsv3 op file includes.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3BASE_TD
#define DSV3_IR_DSV3BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def DSV3_Dialect : Dialect {
  let name = "dsv3";
  let cppNamespace = "::dsv3";
  let summary = "DeepSeek-V3 architecture: MLA attention, DeepSeekMoE routing, MTP";
  let description = [{
    Two levels of ops live here. Model-structure ops (`dsv3.mla_attention`,
    `dsv3.moe`, `dsv3.mlp`, `dsv3.mtp_input`) state the architecture with its
    hyper-parameters as attributes; `dsv3-decompose` rewrites them into the
    tensor-level ops (`dsv3.linear`, `dsv3.rope`, `dsv3.mla_core`,
    `dsv3.moe_router`, `dsv3.moe_dispatch`, `dsv3.grouped_linear`, ...) that `convert-dsv3-to-linalg`
    lowers to upstream dialects. Weights enter the IR through `dsv3.param`,
    named with the Hugging Face hub tensor names.
  }];
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect"];
  let usePropertiesForAttributes = 1;
  let useDefaultAttributePrinterParser = 1;
  let useDefaultTypePrinterParser = 1;
  // Entry-point argument (dsv3.input) and result attributes (dsv3.output,
  // dsv3.output_role, dsv3.output_param) are checked where they are
  // attached.
  let hasRegionArgAttrVerify = 1;
  let hasRegionResultAttrVerify = 1;
  let extraClassDeclaration = [{
    static constexpr ::llvm::StringLiteral kInputName = "dsv3.input";
    static constexpr ::llvm::StringLiteral kOutputName = "dsv3.output";
    static constexpr ::llvm::StringLiteral kOutputRole = "dsv3.output_role";
    static constexpr ::llvm::StringLiteral kOutputParam = "dsv3.output_param";
  }];
}

// Ops carry no effect traits by default: an op that reads or writes state
// (a KV cache, a communication request, a random stream) must not be moved,
// merged or erased as if it were a value. Ops with value semantics say so
// with DSV3_PureOp.
class DSV3_Op<string mnemonic, list<Trait> traits = []>
    : Op<DSV3_Dialect, mnemonic, traits>;
class DSV3_PureOp<string mnemonic, list<Trait> traits = []>
    : DSV3_Op<mnemonic, !listconcat(traits, [Pure])>;

// Ranked float32 tensors are the only activation type until the FP8/BF16
// passes introduce others.
def DSV3_F32Tensor : RankedTensorOf<[F32]>;
def DSV3_IndexTensor : RankedTensorOf<[I64]>;
// A latent KV cache is stored in float32 or BF16 (`--kv-cache-dtype`); the
// attention reading it computes in float32.
def DSV3_CacheTensor : RankedTensorOf<[F32, BF16]>;

#endif // DSV3_IR_DSV3BASE_TD
