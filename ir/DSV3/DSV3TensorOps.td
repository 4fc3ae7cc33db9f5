//===- DSV3TensorOps.td - tensor-level ops ---------------*- tablegen -*-===//
//
// The compute primitives that model-structure ops decompose into and that
// `convert-dsv3-to-linalg` lowers to linalg/tensor/arith/math/scf.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3TENSOROPS_TD
#define DSV3_IR_DSV3TENSOROPS_TD

include "ir/DSV3/DSV3Base.td"

def DSV3_LinearOp : DSV3_PureOp<"linear"> {
  let summary = "y = x W^T over the last dimension (no bias, as in DeepSeek-V3)";
  let description = [{
    `x` is `[..., K]`, `weight` is `[N, K]` (row-major `[out, in]`, the hub
    layout); the result is `[..., N]`.

    ```mlir
    %y = dsv3.linear %x, %w : (tensor<2x32x256xf32>, tensor<128x256xf32>) -> tensor<2x32x128xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$weight);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$x `,` $weight attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_RMSNormOp : DSV3_PureOp<"rms_norm"> {
  let summary = "RMSNorm over the last dimension: x * rsqrt(mean(x^2) + eps) * w";
  let description = [{
    ```mlir
    %y = dsv3.rms_norm %x, %w {epsilon = 1.0e-06} : (tensor<2x32x256xf32>, tensor<256xf32>) -> tensor<2x32x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$weight, F64Attr:$epsilon);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$x `,` $weight attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_PositionsOp : DSV3_PureOp<"positions"> {
  let summary = "the position of every token of a batch of rows";
  let description = [{
    `result[b, t] = offset + t`: the positions of rows that all start at
    `offset` (a full sequence, or the MTP block's shifted one). Steps that
    continue a cached sequence take their positions as an argument instead.

    ```mlir
    %p = dsv3.positions {offset = 0 : i64} : tensor<2x32xi64>
    ```
  }];
  let arguments = (ins I64Attr:$offset);
  let results = (outs DSV3_IndexTensor:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def DSV3_RopeOp : DSV3_PureOp<"rope"> {
  let summary = "rotary position embedding on interleaved pairs";
  let description = [{
    `x` is `[B, T, H, R]`, `positions` is `[B, T]` (int64, an operand so that
    decode steps rotate at run-time positions). Pair `i` = `(x[2i],
    x[2i+1])` of token `(b, t)` is rotated by `positions[b, t] * inv_freq[i]`,
    with cos and sin multiplied by `attention_scaling` (YaRN's magnitude
    correction). Output pairs stay interleaved. With `transpose`, the
    rotation is by the opposite angle: the gradient of the forward rotation.

    ```mlir
    %r = dsv3.rope %x, %positions {inv_freq = array<f64: 1.0, 0.31>, attention_scaling = 1.0}
         : (tensor<2x32x4x4xf32>, tensor<2x32xi64>) -> tensor<2x32x4x4xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_IndexTensor:$positions,
                       DenseF64ArrayAttr:$inv_freq, F64Attr:$attention_scaling,
                       UnitAttr:$transpose);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$x `,` $positions attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MLACoreOp : DSV3_PureOp<"mla_core"> {
  let summary = "MLA attention core: causal softmax(scale * (q_nope k_nope^T + q_rope k_rope^T)) v";
  let description = [{
    `q_nope [B,Tq,H,Dn]`, `q_rope [B,Tq,H,R]`, `k_nope [B,Tk,H,Dn]`,
    `k_rope [B,Tk,R]` (one rope key shared by every head), `v [B,Tk,H,Dv]`;
    result `[B,Tq,H,Dv]`, `Tq <= Tk`. The queries are the last `Tq` of the
    `Tk` positions (`Tq < Tk`: a step after a cached prefix of `Tk - Tq`
    keys); query `i` at position `t = Tk - Tq + i` attends to keys `u <= t`,
    and with `segment_ids [B,Tk]` only where `segment_ids[b,u] ==
    segment_ids[b,t]` (packed documents). Gradients need `Tq = Tk`.

    ```mlir
    %o = dsv3.mla_core %qn, %qr, %kn, %kr, %v {softmax_scale = 0.27}
         : (tensor<2x32x4x32xf32>, tensor<2x32x4x16xf32>, tensor<2x32x4x32xf32>, tensor<2x32x16xf32>, tensor<2x32x4x32xf32>) -> tensor<2x32x4x32xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$q_nope, DSV3_F32Tensor:$q_rope,
      DSV3_F32Tensor:$k_nope, DSV3_F32Tensor:$k_rope, DSV3_F32Tensor:$v,
      Optional<DSV3_IndexTensor>:$segment_ids, F64Attr:$softmax_scale);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$q_nope `,` $q_rope `,` $k_nope `,` $k_rope `,` $v (`segments` $segment_ids^)? attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MLAAbsorbedCoreOp : DSV3_PureOp<"mla_absorbed_core"> {
  let summary = "MLA attention core in absorbed form, over a latent cache and new rows";
  let description = [{
    `q_nope [B,T,H,Dn]`, `q_rope [B,T,H,R]` (rotated), `w_uk [H,Dn,C]`,
    `w_uv [H,Dv,C]` (the two halves of each head of `kv_b_proj`), `cache
    [B,S,C+R]` (float32 or BF16, widened on read), `rows [B,T,C+R]` (the new
    tokens' latent rows `[c ; k_rope]`, float32),
    `positions [B,T]`; result `[B,T,H,Dv]`. Per head: `q̂ = w_ukᵀ q_nope`
    (`[C]`), scores `softmax_scale · (q̂·c_u + q_rope·k_rope_u)` over the keys
    `u` = cache rows `0 .. positions[b,0] - 1` then new rows `0 .. i`,
    softmax, `ô = Σ p_u c_u`, result `w_uv ô`. Cache rows from
    `positions[b,0]` on are never read.

    ```mlir
    %o = dsv3.mla_absorbed_core %qn, %qr, %wuk, %wuv, %cache, %rows, %p {softmax_scale = 0.27}
         : (tensor<8x1x4x32xf32>, tensor<8x1x4x16xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>,
            tensor<8x512x80xf32>, tensor<8x1x80xf32>, tensor<8x1xi64>) -> tensor<8x1x4x32xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$q_nope, DSV3_F32Tensor:$q_rope,
      DSV3_F32Tensor:$w_uk, DSV3_F32Tensor:$w_uv, DSV3_CacheTensor:$cache,
      DSV3_F32Tensor:$rows, DSV3_IndexTensor:$positions, F64Attr:$softmax_scale);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$q_nope `,` $q_rope `,` $w_uk `,` $w_uv `,` $cache `,` $rows `,` $positions attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_SwiGLUOp : DSV3_PureOp<"swiglu"> {
  let summary = "silu(gate) * up, elementwise";
  let description = [{
    ```mlir
    %a = dsv3.swiglu %g, %u : (tensor<64x32xf32>, tensor<64x32xf32>) -> tensor<64x32xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$gate, DSV3_F32Tensor:$up);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoERouterOp : DSV3_PureOp<"moe_router"> {
  let summary = "DeepSeek-V3 router: sigmoid scores, bias for selection, group-limited top-k";
  let description = [{
    `x [N, D]`, `router [E, D]`, `bias [E]`. Returns the gate weights
    `[N, top_k]` and the chosen expert ids `[N, top_k]` (selection order;
    ties go to the lower expert id). See `dsv3.moe` for the rule.

    Node-limited routing (`nodes`, `max_nodes`, set by
    `dsv3-node-limited-routing` from the parallel plan): the experts sit on
    `nodes` nodes of `E / nodes` consecutive experts; each token first
    keeps the `max_nodes` nodes with the highest sum of their best
    `ceil(top_k / max_nodes)` biased scores (DeepSeek-V3's rule), then
    picks groups among those nodes' groups (groups must lie within nodes),
    then its `top_k` experts among the kept nodes and groups. With
    `n_group` equal to `nodes` and `topk_group` to `max_nodes` the groups
    are the nodes, and for `top_k / max_nodes = 2` (DeepSeek-V3: 8 / 4) the
    node rule is the group rule.

    ```mlir
    %w, %ids = dsv3.moe_router %x, %r, %b {top_k = 4, n_group = 4, topk_group = 2, norm_topk_prob = true, routed_scaling_factor = 2.5}
               : (tensor<64x256xf32>, tensor<16x256xf32>, tensor<16xf32>) -> (tensor<64x4xf32>, tensor<64x4xi64>)
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$router, DSV3_F32Tensor:$bias,
      I64Attr:$top_k, I64Attr:$n_group, I64Attr:$topk_group,
      BoolAttr:$norm_topk_prob, F64Attr:$routed_scaling_factor,
      OptionalAttr<I64Attr>:$nodes, OptionalAttr<I64Attr>:$max_nodes);
  let results = (outs DSV3_F32Tensor:$weights, DSV3_IndexTensor:$expert_ids);
  let assemblyFormat = "$x `,` $router `,` $bias attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoEDispatchOp : DSV3_PureOp<"moe_dispatch"> {
  let summary = "groups the (token, slot) pairs of a routing by expert";
  let description = [{
    `x [N, D]` and the router's `expert_ids [N, K]` give the rows the routed
    experts read: `rows [N*K, D]`, one row per (token, slot), sorted by
    expert (stable, so a group keeps token order). `row_of_slot [N, K]` is
    where each pair went, `slot_of_row [N*K]` the inverse (`n*K + k`), and
    `offsets [E+1]` delimits expert `e`'s rows `[offsets[e], offsets[e+1])`.
    Shapes stay static: every pair gets exactly one row, none is dropped.
    In an expert-parallel schedule the all-to-all goes between this op and
    the grouped linears.

    ```mlir
    %rows, %row_of_slot, %slot_of_row, %offsets = dsv3.moe_dispatch %x, %ids {num_experts = 16}
        : (tensor<64x256xf32>, tensor<64x4xi64>) -> (tensor<256x256xf32>, tensor<64x4xi64>, tensor<256xi64>, tensor<17xi64>)
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_IndexTensor:$expert_ids,
      I64Attr:$num_experts);
  let results = (outs DSV3_F32Tensor:$rows, DSV3_IndexTensor:$row_of_slot,
      DSV3_IndexTensor:$slot_of_row, DSV3_IndexTensor:$offsets);
  let assemblyFormat = "$x `,` $expert_ids attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoESendCountsOp : DSV3_PureOp<"moe_send_counts"> {
  let summary = "rows a dispatch sends to each expert-parallel rank";
  let description = [{
    `offsets [G+1]` delimits the dispatched rows of `G >= num_experts`
    groups (`dsv3.moe_dispatch`); groups past `num_experts` are rows that go
    nowhere (padding). With the experts split over `ranks` ranks in
    contiguous blocks of `num_experts / ranks`, `send_counts[p]` is the
    number of rows for rank p's experts (consecutive rows, in rank order)
    and `expert_counts[e]` the rows of expert e.

    ```mlir
    %sc, %ec = dsv3.moe_send_counts %offsets {num_experts = 16 : i64, ranks = 2 : i64}
        : tensor<18xi64> -> (tensor<2xi64>, tensor<16xi64>)
    ```
  }];
  let arguments = (ins DSV3_IndexTensor:$offsets, I64Attr:$num_experts,
                       ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks);
  let results = (outs DSV3_IndexTensor:$send_counts, DSV3_IndexTensor:$expert_counts);
  let assemblyFormat = "$offsets attr-dict `:` type($offsets) `->` `(` type($send_counts) `,` type($expert_counts) `)`";
  let hasVerifier = 1;
}

def DSV3_MoERecvLayoutOp : DSV3_PureOp<"moe_recv_layout"> {
  let summary = "where the rows an expert-parallel rank receives belong";
  let description = [{
    `counts [ranks * L]` holds, for each source rank in order, how many
    rows it sends for each of this rank's `L` experts (the all-to-all of
    `dsv3.moe_send_counts`'s `expert_counts`). The rows arrive source by
    source, expert by expert within a source: `recv_counts[p]` is source
    p's total, and `local_expert [M, 1]` the local expert (0..L-1) of each
    of the `M` rows of the receive buffer, `L` for the rows past the
    received ones. `dsv3.moe_dispatch` with `num_experts = L + 1` then
    groups the rows by expert.

    ```mlir
    %rc, %le = dsv3.moe_recv_layout %counts {ranks = 2 : i64}
        : tensor<16xi64> -> (tensor<2xi64>, tensor<128x1xi64>)
    ```
  }];
  let arguments = (ins DSV3_IndexTensor:$counts,
                       ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks);
  let results = (outs DSV3_IndexTensor:$recv_counts, DSV3_IndexTensor:$local_expert);
  let assemblyFormat = "$counts attr-dict `:` type($counts) `->` `(` type($recv_counts) `,` type($local_expert) `)`";
  let hasVerifier = 1;
}

def DSV3_GroupedLinearOp : DSV3_PureOp<"grouped_linear"> {
  let summary = "y[r] = x[r] W[e]^T for the rows r of each expert group e";
  let description = [{
    `x [R, K]` holds rows grouped by expert as `offsets [E+1]` delimits them
    (`dsv3.moe_dispatch`), `weight [E, N, K]` the experts' `[out, in]`
    matrices; the result is `[R, N]`. Each group is one GEMM: work is
    proportional to the routed tokens, not to tokens times experts.

    ```mlir
    %h = dsv3.grouped_linear %rows, %w, %offsets : (tensor<256x256xf32>, tensor<16x32x256xf32>, tensor<17xi64>) -> tensor<256x32xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$weight,
      DSV3_IndexTensor:$offsets);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$x `,` $weight `,` $offsets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoECombineOp : DSV3_PureOp<"moe_combine"> {
  let summary = "y[n] = sum_k weights[n,k] * rows[row_of_slot[n,k]]";
  let description = [{
    Gathers each token's expert outputs back from the grouped rows and sums
    them with the gate weights, slots in order. With unit weights it is also
    the adjoint of `dsv3.moe_dispatch`.

    ```mlir
    %y = dsv3.moe_combine %rows, %w, %row_of_slot : (tensor<256x256xf32>, tensor<64x4xf32>, tensor<64x4xi64>) -> tensor<64x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$rows, DSV3_F32Tensor:$weights,
      DSV3_IndexTensor:$row_of_slot);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$rows `,` $weights `,` $row_of_slot attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_CrossEntropyOp : DSV3_PureOp<"cross_entropy"> {
  let summary = "mean cross entropy of logits [B,T,V] against labels [B,T]";
  let description = [{
    `mean_{b,t} (logsumexp(logits[b,t,:]) - logits[b,t,labels[b,t]])` over
    the positions whose label is not negative (a negative label marks a
    position to ignore, e.g. across a document boundary); 0 if none is left.

    ```mlir
    %l = dsv3.cross_entropy %logits, %labels : (tensor<2x31x512xf32>, tensor<2x31xi64>) -> tensor<f32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$logits, DSV3_IndexTensor:$labels);
  let results = (outs 0DTensorOf<[F32]>:$result);
  let assemblyFormat = "$logits `,` $labels attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoEBalanceLossOp : DSV3_PureOp<"moe_balance_loss"> {
  let summary = "complementary sequence-wise balance loss of one MoE layer";
  let description = [{
    With router `logits [B,T,E]`, the chosen `expert_ids [B*T, K]`, scores
    `s = sigmoid(logits)` normalised per token `s' = s / sum_j s_j`:
    `f_i = E / (K T) * count_i`, `P_i = mean_t s'_i` per sequence, and the
    result is `alpha * mean_b sum_i f_i P_i` (DeepSeek-V3 eq. 17-20, with the
    actual selection as the indicator). `f` is a constant for gradients.

    ```mlir
    %l = dsv3.moe_balance_loss %logits, %ids {alpha = 1.0e-04 : f64}
         : (tensor<2x32x16xf32>, tensor<64x4xi64>) -> tensor<f32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$logits, DSV3_IndexTensor:$expert_ids,
                       F64Attr:$alpha);
  let results = (outs 0DTensorOf<[F32]>:$result);
  let assemblyFormat = "$logits `,` $expert_ids attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

#endif // DSV3_IR_DSV3TENSOROPS_TD
