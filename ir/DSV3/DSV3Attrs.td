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

// What an entry point's result is, on its `dsv3.output_role` result
// attribute next to `dsv3.output` (the name users see in output files) and,
// for gradients and expert choices, `dsv3.output_param` (the parameter it
// differentiates, or the routing bias its expert loads update). The runtime
// keys training on the role and the parameter, never on the name.
def DSV3_OutputRole : I32EnumAttr<"OutputRole", "the meaning of an entry point's result", [
    I32EnumAttrCase<"Value", 0, "value">,
    I32EnumAttrCase<"Logits", 1, "logits">,
    I32EnumAttrCase<"Loss", 2, "loss">,
    I32EnumAttrCase<"MTPLogits", 3, "mtp_logits">,
    I32EnumAttrCase<"MTPLoss", 4, "mtp_loss">,
    I32EnumAttrCase<"BalanceLoss", 5, "balance_loss">,
    I32EnumAttrCase<"TotalLoss", 6, "total_loss">,
    I32EnumAttrCase<"Gradient", 7, "gradient">,
    I32EnumAttrCase<"ExpertIds", 8, "expert_ids">,
    I32EnumAttrCase<"Parameters", 9, "parameters">,
    I32EnumAttrCase<"FirstMoment", 10, "first_moment">,
    I32EnumAttrCase<"SecondMoment", 11, "second_moment">,
    // A pipeline stage's output hidden state, the next stage's input.
    I32EnumAttrCase<"Activation", 12, "activation">,
    // What a forward chunk keeps for its backward chunks (and Bi for W).
    I32EnumAttrCase<"Saved", 13, "saved">,
    // A generation step's latent KV-cache rows [layers, B, T, C+R], which the
    // runtime writes into its cache at the tokens' positions.
    I32EnumAttrCase<"CacheRows", 14, "cache_rows">,
    // The main model's hidden state after the final norm (the MTP draft's
    // input).
    I32EnumAttrCase<"Hidden", 15, "hidden">]> {
  let cppNamespace = "::dsv3";
  let genSpecializedAttr = 0;
}

def DSV3_OutputRoleAttr : EnumAttr<DSV3_Dialect, DSV3_OutputRole, "output_role"> {
  let assemblyFormat = "`<` $value `>`";
}

#endif // DSV3_IR_DSV3ATTRS_TD
