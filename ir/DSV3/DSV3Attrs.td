//===- DSV3Attrs.td - dsv3 attributes --------------------*- tablegen -*-===//
//
// Facts the compiler/runtime contract rests on, as verified attributes
// instead of naming conventions.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3ATTRS_TD
#define DSV3_IR_DSV3ATTRS_TD

include "ir/DSV3/DSV3Base.td"
include "mlir/IR/EnumAttr.td"

// What a parameter is for, set by the importer from the architecture (not
// from its hub name). Passes key policies on it (FP8 keeps the embedding,
// heads, MTP projection and routers in high precision); the runtime keys
// initialisation and training on it (norms start at 1; routing biases are
// not trained by gradient but by the expert loads).
def DSV3_ParamRole : I32EnumAttr<"ParamRole", "the purpose of a model parameter", [
    I32EnumAttrCase<"Weight", 0, "weight">,
    I32EnumAttrCase<"Embedding", 1, "embedding">,
    I32EnumAttrCase<"Norm", 2, "norm">,
    I32EnumAttrCase<"Attention", 3, "attention">,
    I32EnumAttrCase<"MLP", 4, "mlp">,
    I32EnumAttrCase<"Expert", 5, "expert">,
    I32EnumAttrCase<"SharedExpert", 6, "shared_expert">,
    I32EnumAttrCase<"Router", 7, "router">,
    I32EnumAttrCase<"RoutingBias", 8, "routing_bias">,
    I32EnumAttrCase<"Head", 9, "head">,
    I32EnumAttrCase<"MTPProjection", 10, "mtp_projection">]> {
  let cppNamespace = "::dsv3";
  let genSpecializedAttr = 0;
}

def DSV3_ParamRoleAttr : EnumAttr<DSV3_Dialect, DSV3_ParamRole, "role"> {
  let assemblyFormat = "`<` $value `>`";
}

#endif // DSV3_IR_DSV3ATTRS_TD
