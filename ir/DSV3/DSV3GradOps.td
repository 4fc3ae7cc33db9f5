//===- DSV3GradOps.td - gradient ops of the tensor-level ops -*- tablegen -*-===//
//
// What `dsv3-autodiff` emits. Every op with parameters has separate
// input-gradient (`*_grad_input`, "B") and weight-gradient (`*_grad_weight`,
// "W") forms, so that zero-bubble and DualPipe schedules can place them
// independently. Activations they need are recomputed from their operands
// inside the lowering unless the operands carry them.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3GRADOPS_TD
#define DSV3_IR_DSV3GRADOPS_TD

include "ir/DSV3/DSV3Base.td"

def DSV3_LinearGradInputOp : DSV3_PureOp<"linear_grad_input"> {
  let summary = "dx = dy W for y = x W^T (B)";
  let description = [{
    ```mlir
    %dx = dsv3.linear_grad_input %dy, %w : (tensor<2x32x128xf32>, tensor<128x256xf32>) -> tensor<2x32x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$dy, DSV3_F32Tensor:$weight);
  let results = (outs DSV3_F32Tensor:$dx);
  let assemblyFormat = "$dy `,` $weight attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_LinearGradWeightOp : DSV3_PureOp<"linear_grad_weight"> {
  let summary = "dW = dy^T x summed over all leading dimensions (W)";
  let description = [{
    `param` names the parameter whose gradient this is, when the weight is
    a `dsv3.param` (what precision passes and schedules key on).

    ```mlir
    %dw = dsv3.linear_grad_weight %dy, %x : (tensor<2x32x128xf32>, tensor<2x32x256xf32>) -> tensor<128x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$dy, DSV3_F32Tensor:$x,
                       OptionalAttr<StrAttr>:$param);
  let results = (outs DSV3_F32Tensor:$dweight);
  let assemblyFormat = "$dy `,` $x attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_RMSNormGradInputOp : DSV3_PureOp<"rms_norm_grad_input",
    [AllTypesMatch<["x", "dy", "dx"]>]> {
  let summary = "input gradient of dsv3.rms_norm (B)";
  let description = [{
    `dx = r (w*dy) - x r^3 / D * sum(w*dy*x)` with `r = rsqrt(mean(x^2)+eps)`.
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$weight,
                       DSV3_F32Tensor:$dy, F64Attr:$epsilon);
  let results = (outs DSV3_F32Tensor:$dx);
  let assemblyFormat = "$x `,` $weight `,` $dy attr-dict `:` functional-type(operands, results)";
}

def DSV3_RMSNormGradWeightOp : DSV3_PureOp<"rms_norm_grad_weight",
    [AllTypesMatch<["x", "dy"]>]> {
  let summary = "weight gradient of dsv3.rms_norm: sum over rows of dy * x * r (W)";
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$dy, F64Attr:$epsilon);
  let results = (outs DSV3_F32Tensor:$dweight);
  let assemblyFormat = "$x `,` $dy attr-dict `:` functional-type(operands, results)";
}

def DSV3_MLACoreGradOp : DSV3_PureOp<"mla_core_grad",
    [AllTypesMatch<["q_nope", "k_nope", "dq_nope", "dk_nope"]>,
     AllTypesMatch<["q_rope", "dq_rope"]>, AllTypesMatch<["k_rope", "dk_rope"]>,
     AllTypesMatch<["v", "dv", "dout"]>]> {
  let summary = "gradients of dsv3.mla_core (the softmax is recomputed)";
  let arguments = (ins DSV3_F32Tensor:$q_nope, DSV3_F32Tensor:$q_rope,
      DSV3_F32Tensor:$k_nope, DSV3_F32Tensor:$k_rope, DSV3_F32Tensor:$v,
      DSV3_F32Tensor:$dout, Optional<DSV3_IndexTensor>:$segment_ids,
      F64Attr:$softmax_scale);
  let results = (outs DSV3_F32Tensor:$dq_nope, DSV3_F32Tensor:$dq_rope,
      DSV3_F32Tensor:$dk_nope, DSV3_F32Tensor:$dk_rope, DSV3_F32Tensor:$dv);
  let assemblyFormat = "$q_nope `,` $q_rope `,` $k_nope `,` $k_rope `,` $v `,` $dout (`segments` $segment_ids^)? attr-dict `:` functional-type(operands, results)";
}

def DSV3_SwiGLUGradOp : DSV3_PureOp<"swiglu_grad",
    [AllTypesMatch<["gate", "up", "dy", "dgate", "dup"]>]> {
  let summary = "gradients of silu(gate) * up";
  let arguments = (ins DSV3_F32Tensor:$gate, DSV3_F32Tensor:$up, DSV3_F32Tensor:$dy);
  let results = (outs DSV3_F32Tensor:$dgate, DSV3_F32Tensor:$dup);
  let assemblyFormat = "$gate `,` $up `,` $dy attr-dict `:` functional-type(operands, results)";
}

def DSV3_MoERouterGradOp : DSV3_PureOp<"moe_router_grad",
    [AllTypesMatch<["logits", "dlogits"]>]> {
  let summary = "router-logit gradient of the gate weights (selection is not differentiated)";
  let description = [{
    `logits [N, E]`, chosen `expert_ids [N, K]` and the gradient of the gate
    weights `[N, K]` give the gradient of the router logits; the routing bias
    gets none.
  }];
  let arguments = (ins DSV3_F32Tensor:$logits, DSV3_IndexTensor:$expert_ids,
      DSV3_F32Tensor:$dweights, BoolAttr:$norm_topk_prob,
      F64Attr:$routed_scaling_factor);
  let results = (outs DSV3_F32Tensor:$dlogits);
  let assemblyFormat = "$logits `,` $expert_ids `,` $dweights attr-dict `:` functional-type(operands, results)";
  // dweights and expert_ids share a shape, not an element type.
  let hasVerifier = 1;
}

def DSV3_GroupedLinearGradInputOp : DSV3_PureOp<"grouped_linear_grad_input"> {
  let summary = "dx[r] = dy[r] W[e] for the rows r of each expert group e (B)";
  let arguments = (ins DSV3_F32Tensor:$dy, DSV3_F32Tensor:$weight,
      DSV3_IndexTensor:$offsets);
  let results = (outs DSV3_F32Tensor:$dx);
  let assemblyFormat = "$dy `,` $weight `,` $offsets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_GroupedLinearGradWeightOp : DSV3_PureOp<"grouped_linear_grad_weight"> {
  let summary = "dW[e] = sum over the rows r of group e of dy[r]^T x[r] (W)";
  let description = [{
    `param` names the stacked expert parameter, as on
    `dsv3.linear_grad_weight`.
  }];
  let arguments = (ins DSV3_F32Tensor:$dy, DSV3_F32Tensor:$x,
      DSV3_IndexTensor:$offsets, I64Attr:$num_experts,
      OptionalAttr<StrAttr>:$param);
  let results = (outs DSV3_F32Tensor:$dweight);
  let assemblyFormat = "$dy `,` $x `,` $offsets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoECombineGradOp : DSV3_PureOp<"moe_combine_grad",
    [AllTypesMatch<["weights", "dweights"]>]> {
  let summary = "gradients of dsv3.moe_combine for its rows and gate weights";
  let description = [{
    `drows[r] = weights[s] * dy[s / K]` with `s = slot_of_row[r]`, and
    `dweights[n,k] = dy[n] . rows[row_of_slot[n,k]]`.
  }];
  let arguments = (ins DSV3_F32Tensor:$rows, DSV3_F32Tensor:$weights,
      DSV3_IndexTensor:$row_of_slot, DSV3_IndexTensor:$slot_of_row,
      DSV3_F32Tensor:$dy);
  let results = (outs DSV3_F32Tensor:$drows, DSV3_F32Tensor:$dweights);
  let assemblyFormat = "$rows `,` $weights `,` $row_of_slot `,` $slot_of_row `,` $dy attr-dict `:` functional-type(operands, results)";
}

def DSV3_CrossEntropyGradOp : DSV3_PureOp<"cross_entropy_grad",
    [AllTypesMatch<["logits", "dlogits"]>]> {
  let summary = "dlogits = dloss / count * (softmax(logits) - onehot(labels)), 0 on ignored rows";
  let arguments = (ins DSV3_F32Tensor:$logits, DSV3_IndexTensor:$labels,
                       0DTensorOf<[F32]>:$dloss);
  let results = (outs DSV3_F32Tensor:$dlogits);
  let assemblyFormat = "$logits `,` $labels `,` $dloss attr-dict `:` functional-type(operands, results)";
}

def DSV3_EmbeddingGradOp : DSV3_PureOp<"embedding_grad"> {
  let summary = "table gradient: rows of dy scattered-added at the ids (W)";
  let arguments = (ins DSV3_IndexTensor:$ids, DSV3_F32Tensor:$dy);
  let results = (outs DSV3_F32Tensor:$dtable);
  let assemblyFormat = "$ids `,` $dy attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoEBalanceLossGradOp : DSV3_PureOp<"moe_balance_loss_grad",
    [AllTypesMatch<["logits", "dlogits"]>]> {
  let summary = "router-logit gradient of dsv3.moe_balance_loss";
  let arguments = (ins DSV3_F32Tensor:$logits, DSV3_IndexTensor:$expert_ids,
                       0DTensorOf<[F32]>:$dloss, F64Attr:$alpha);
  let results = (outs DSV3_F32Tensor:$dlogits);
  let assemblyFormat = "$logits `,` $expert_ids `,` $dloss attr-dict `:` functional-type(operands, results)";
}

#endif // DSV3_IR_DSV3GRADOPS_TD
