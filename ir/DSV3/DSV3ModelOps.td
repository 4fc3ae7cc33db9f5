//===- DSV3ModelOps.td - model-structure ops -------------*- tablegen -*-===//
//
// Ops that state the architecture: what the frontend emits and what users
// read in `dsv3c compile --emit=dsv3`. `dsv3-decompose` expands them into the
// tensor-level ops of DSV3TensorOps.td.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3MODELOPS_TD
#define DSV3_IR_DSV3MODELOPS_TD

include "ir/DSV3/DSV3Base.td"
include "ir/DSV3/DSV3Attrs.td"

def DSV3_ParamOp : DSV3_PureOp<"param"> {
  let summary = "a named model parameter";
  let description = [{
    Reads the parameter stored under a Hugging Face hub tensor name. With
    `stack = N` the name holds one `*`, replaced by 0..N-1, and the result
    stacks those N tensors along a new leading dimension (the routed experts
    of one layer). With `shard = "expert"` (dsv3-expert-parallel) the stack
    is this rank's block of it: rank r of the expert group holds indices
    `r*N .. (r+1)*N-1`. `role` says what the parameter is for (the importer sets
    it from the architecture; absent means a plain weight): passes and the
    runtime key their policies on it, never on the name. The lowering
    assigns each parameter a slice of one flat parameter buffer and records
    the layout, roles included, on the module.

    ```mlir
    %w = dsv3.param "model.layers.0.self_attn.q_a_proj.weight" role <attention> : tensor<128x256xf32>
    %g = dsv3.param "model.layers.1.mlp.experts.*.gate_proj.weight" stack 16 role <expert> : tensor<16x32x256xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name, OptionalAttr<I64Attr>:$stack,
                       OptionalAttr<DSV3_ParamRoleAttr>:$role, OptionalAttr<StrAttr>:$shard);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$name (`stack` $stack^)? (`role` $role^)? (`shard` $shard^)? attr-dict `:` type($result)";
  let extraClassDeclaration = [{
    /// The role, `weight` when none is set.
    ::dsv3::ParamRole getRoleOrWeight() {
      return getRole() ? *getRole() : ::dsv3::ParamRole::Weight;
    }
  }];
  let hasVerifier = 1;
}

def DSV3_EmbeddingOp : DSV3_PureOp<"embedding"> {
  let summary = "token embedding lookup";
  let description = [{
    `result[b, t, :] = table[ids[b, t], :]`. Ids are validated against the
    vocabulary before execution; the generated code also clamps them.

    ```mlir
    %h = dsv3.embedding %ids, %table : tensor<2x32xi64>, tensor<512x256xf32> -> tensor<2x32x256xf32>
    ```
  }];
  let arguments = (ins DSV3_IndexTensor:$ids, DSV3_F32Tensor:$table);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$ids `,` $table attr-dict `:` type($ids) `,` type($table) `->` type($result)";
  let hasVerifier = 1;
}

def DSV3_MLAAttentionOp : DSV3_PureOp<"mla_attention", [AttrSizedOperandSegments]> {
  let summary = "multi-head latent attention (DeepSeek-V2/V3 MLA), causal";
  let description = [{
    Query path: with `q_lora_rank > 0`, `q = q_b(rms_norm(q_a(x)))`, otherwise
    `q = q_proj(x)`; per head `[q_nope (qk_nope_head_dim) ; q_rope
    (qk_rope_head_dim)]`. KV path: `[c (kv_lora_rank) ; k_rope] = kv_a(x)`,
    `[k_nope ; v] = kv_b(rms_norm(c))` per head, `k_rope` shared by all heads.
    RoPE (frequencies in `rope_inv_freq`, YaRN already folded in) rotates
    `q_rope` and `k_rope` at positions `0..T-1`. Logits are scaled by
    `softmax_scale`, masked causally, soft-maxed and applied to `v`; the
    heads are concatenated and projected by `o_proj`. With `segments`
    (`[B, T]` document ids of a packed row), a token only attends to earlier
    tokens of its own document.

    ```mlir
    %y = dsv3.mla_attention %x, q_a %qa, q_a_norm %qn, q_b %qb, kv_a %kva, kv_a_norm %kvn, kv_b %kvb, o %o
         {num_heads = 4, q_lora_rank = 128, kv_lora_rank = 64, qk_nope_head_dim = 32,
          qk_rope_head_dim = 16, v_head_dim = 32, softmax_scale = 0.27, rms_norm_eps = 1.0e-06,
          rope_inv_freq = array<f64: ...>, rope_attention_scaling = 1.0}
         : (tensor<2x32x256xf32>, ...) -> tensor<2x32x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x,
      Optional<DSV3_F32Tensor>:$q_a, Optional<DSV3_F32Tensor>:$q_a_norm,
      Optional<DSV3_F32Tensor>:$q_b, Optional<DSV3_F32Tensor>:$q_proj,
      DSV3_F32Tensor:$kv_a, DSV3_F32Tensor:$kv_a_norm, DSV3_F32Tensor:$kv_b,
      DSV3_F32Tensor:$o, Optional<DSV3_IndexTensor>:$segment_ids,
      I64Attr:$num_heads, I64Attr:$q_lora_rank, I64Attr:$kv_lora_rank,
      I64Attr:$qk_nope_head_dim, I64Attr:$qk_rope_head_dim, I64Attr:$v_head_dim,
      F64Attr:$softmax_scale, F64Attr:$rms_norm_eps,
      DenseF64ArrayAttr:$rope_inv_freq, F64Attr:$rope_attention_scaling);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = [{
    $x (`q_a` $q_a^)? (`q_a_norm` $q_a_norm^)? (`q_b` $q_b^)? (`q_proj` $q_proj^)?
    `kv_a` $kv_a `kv_a_norm` $kv_a_norm `kv_b` $kv_b `o` $o
    (`segments` $segment_ids^)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def DSV3_MLACacheRowOp : DSV3_PureOp<"mla_cache_row"> {
  let summary = "the latent KV-cache row of each token of an MLA layer";
  let description = [{
    `[rms_norm(c, kv_a_norm) ; rope(k_rope)]` with `[c (kv_lora_rank) ;
    k_rope] = kv_a(x)`, the rope key rotated at `positions [B, T]`: what a
    cache keeps per token and layer (`kv_lora_rank + qk_rope_head_dim`
    values), from which `dsv3.mla_attention` (prefill) and
    `dsv3.mla_cached_attention` (decode) recompute keys and values. The
    projection and norm are the attention's own: after decomposition CSE
    shares them with the layer's `dsv3.mla_attention`.

    ```mlir
    %row = dsv3.mla_cache_row %x, kv_a %kva, kv_a_norm %kvn, positions %p
           {kv_lora_rank = 64, qk_rope_head_dim = 16, rms_norm_eps = 1.0e-06,
            rope_inv_freq = array<f64: ...>, rope_attention_scaling = 1.0}
           : (tensor<1x16x256xf32>, tensor<80x256xf32>, tensor<64xf32>, tensor<1x16xi64>) -> tensor<1x16x80xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$kv_a,
      DSV3_F32Tensor:$kv_a_norm, DSV3_IndexTensor:$positions,
      I64Attr:$kv_lora_rank, I64Attr:$qk_rope_head_dim, F64Attr:$rms_norm_eps,
      DenseF64ArrayAttr:$rope_inv_freq, F64Attr:$rope_attention_scaling);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = [{
    $x `kv_a` $kv_a `kv_a_norm` $kv_a_norm `positions` $positions attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def DSV3_MLACachedAttentionOp : DSV3_PureOp<"mla_cached_attention", [AttrSizedOperandSegments]> {
  let summary = "MLA attention of new tokens over a latent cache, in absorbed form (decode, verify)";
  let description = [{
    The attention of `dsv3.mla_attention` for `T` new tokens per row that
    continue a cached sequence: `positions [B, T]` are the new tokens'
    positions (consecutive, row `b` starting at `positions[b, 0]`),
    `cache [B, S, kv_lora_rank + qk_rope_head_dim]` (float32 or BF16) holds the rows
    (`dsv3.mla_cache_row`) of positions `0 .. positions[b, 0] - 1` (rows past
    those are stale and never read), `rows [B, T, ...]` the new tokens' own.
    A new token attends to the cached prefix and to the new tokens up to
    itself. Absorbed form: `W_UK` (the first `qk_nope_head_dim` rows of each
    head of `kv_b`) is folded into the query, attention runs over the shared
    latent rows (one key of `kv_lora_rank + rope` values for every head),
    and `W_UV` (the last `v_head_dim` rows) is applied after it; keys and
    values are never decompressed. Equal to `dsv3.mla_attention` over the
    whole sequence by associativity.

    ```mlir
    %y = dsv3.mla_cached_attention %x, q_a %qa, q_a_norm %qn, q_b %qb, kv_b %kvb, o %o,
         cache %cache, rows %rows, positions %p {...}
         : (tensor<8x1x256xf32>, ..., tensor<8x512x80xf32>, tensor<8x1x80xf32>, tensor<8x1xi64>) -> tensor<8x1x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x,
      Optional<DSV3_F32Tensor>:$q_a, Optional<DSV3_F32Tensor>:$q_a_norm,
      Optional<DSV3_F32Tensor>:$q_b, Optional<DSV3_F32Tensor>:$q_proj,
      DSV3_F32Tensor:$kv_b, DSV3_F32Tensor:$o, DSV3_CacheTensor:$cache,
      DSV3_F32Tensor:$rows, DSV3_IndexTensor:$positions,
      I64Attr:$num_heads, I64Attr:$q_lora_rank, I64Attr:$kv_lora_rank,
      I64Attr:$qk_nope_head_dim, I64Attr:$qk_rope_head_dim, I64Attr:$v_head_dim,
      F64Attr:$softmax_scale, F64Attr:$rms_norm_eps,
      DenseF64ArrayAttr:$rope_inv_freq, F64Attr:$rope_attention_scaling);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = [{
    $x (`q_a` $q_a^)? (`q_a_norm` $q_a_norm^)? (`q_b` $q_b^)? (`q_proj` $q_proj^)?
    `kv_b` $kv_b `o` $o `cache` $cache `rows` $rows `positions` $positions attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def DSV3_MLPOp : DSV3_PureOp<"mlp"> {
  let summary = "SwiGLU feed-forward block: down(silu(gate(x)) * up(x))";
  let description = [{
    The dense MLP of the first `first_k_dense_replace` layers and the shared
    experts of MoE layers.

    ```mlir
    %y = dsv3.mlp %x, %gate, %up, %down : (tensor<2x32x256xf32>, tensor<512x256xf32>, tensor<512x256xf32>, tensor<256x512xf32>) -> tensor<2x32x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$gate,
                       DSV3_F32Tensor:$up, DSV3_F32Tensor:$down);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$x `,` $gate `,` $up `,` $down attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_MoEOp : DSV3_PureOp<"moe", [AttrSizedOperandSegments]> {
  let summary = "DeepSeekMoE layer: sigmoid routing with selection bias, group-limited top-k, routed and shared experts";
  let description = [{
    Scores `s = sigmoid(x router^T)`; selection uses `s + bias`: groups of
    `E / n_group` experts are ranked by the sum of their two best biased
    scores, the best `topk_group` groups are kept and the `top_k` best
    experts among them chosen. Gate weights are the unbiased scores of the
    chosen experts, divided by their sum when `norm_topk_prob`, times
    `routed_scaling_factor`. The output adds the weighted routed experts and
    the shared experts (when present). The second result holds the chosen
    expert ids per token (`[B*T, top_k]`, in selection order).

    ```mlir
    %y, %ids = dsv3.moe %x, router %r, bias %b, experts %g, %u, %d shared %sg, %su, %sd
               {top_k = 4, n_group = 4, topk_group = 2, norm_topk_prob = true, routed_scaling_factor = 2.5}
               : (...) -> (tensor<2x32x256xf32>, tensor<64x4xi64>)
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$x, DSV3_F32Tensor:$router,
      DSV3_F32Tensor:$bias, DSV3_F32Tensor:$expert_gate,
      DSV3_F32Tensor:$expert_up, DSV3_F32Tensor:$expert_down,
      Optional<DSV3_F32Tensor>:$shared_gate, Optional<DSV3_F32Tensor>:$shared_up,
      Optional<DSV3_F32Tensor>:$shared_down,
      I64Attr:$top_k, I64Attr:$n_group, I64Attr:$topk_group,
      BoolAttr:$norm_topk_prob, F64Attr:$routed_scaling_factor);
  let results = (outs DSV3_F32Tensor:$result, DSV3_IndexTensor:$expert_ids);
  let assemblyFormat = [{
    $x `router` $router `bias` $bias `experts` $expert_gate `,` $expert_up `,` $expert_down
    (`shared` $shared_gate^ `,` $shared_up `,` $shared_down)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def DSV3_MTPInputOp : DSV3_PureOp<"mtp_input"> {
  let summary = "multi-token-prediction input projection";
  let description = [{
    `eh_proj(concat(rms_norm(emb, enorm), rms_norm(h, hnorm)))`: the input of
    an MTP depth's decoder block. `emb` holds the embeddings of the tokens one
    step ahead, `h` the previous depth's hidden states (embedding half first,
    as the published MTP weights expect).

    ```mlir
    %x = dsv3.mtp_input %h, %emb, %enorm, %hnorm, %eh {rms_norm_eps = 1.0e-06}
         : (tensor<2x31x256xf32>, tensor<2x31x256xf32>, tensor<256xf32>, tensor<256xf32>, tensor<256x512xf32>) -> tensor<2x31x256xf32>
    ```
  }];
  let arguments = (ins DSV3_F32Tensor:$hidden, DSV3_F32Tensor:$embedding,
      DSV3_F32Tensor:$enorm, DSV3_F32Tensor:$hnorm, DSV3_F32Tensor:$eh_proj,
      F64Attr:$rms_norm_eps);
  let results = (outs DSV3_F32Tensor:$result);
  let assemblyFormat = "$hidden `,` $embedding `,` $enorm `,` $hnorm `,` $eh_proj attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

#endif // DSV3_IR_DSV3MODELOPS_TD
