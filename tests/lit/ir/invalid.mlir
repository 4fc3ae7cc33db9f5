// RUN: dsv3-opt %s -split-input-file -verify-diagnostics
// One verifier diagnostic per case.

// A linear whose weight does not match the input width.
func.func @linear_width(%x: tensor<4x8xf32>, %w: tensor<16x7xf32>) -> tensor<4x16xf32> {
  // expected-error @+1 {{'weight' dimension 1 is 7 but the last dimension of 'x' is 8}}
  %y = dsv3.linear %x, %w : (tensor<4x8xf32>, tensor<16x7xf32>) -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

// A linear whose result width is not the weight's output dimension.
func.func @linear_result(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) -> tensor<4x15xf32> {
  // expected-error @+1 {{'result' dimension 1 is 15 but x[..., :] W^T is 16}}
  %y = dsv3.linear %x, %w : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x15xf32>
  return %y : tensor<4x15xf32>
}

// -----

// A stacked parameter needs a '*' placeholder.
func.func @param_stack() -> tensor<4x2xf32> {
  // expected-error @+1 {{a stacked parameter name needs exactly one '*', got 'experts.gate'}}
  %p = dsv3.param "experts.gate" stack 4 : tensor<4x2xf32>
  return %p : tensor<4x2xf32>
}

// -----

// '*' without a stack count.
func.func @param_star() -> tensor<4x2xf32> {
  // expected-error @+1 {{'*' in parameter name 'experts.*.gate' requires a stack count}}
  %p = dsv3.param "experts.*.gate" : tensor<4x2xf32>
  return %p : tensor<4x2xf32>
}

// -----

// The stack count must match the leading dimension.
func.func @param_stack_dim() -> tensor<3x2xf32> {
  // expected-error @+1 {{result leading dimension must equal the stack count 4}}
  %p = dsv3.param "e.*.w" stack 4 : tensor<3x2xf32>
  return %p : tensor<3x2xf32>
}

// -----

// RMSNorm weight must match the normalised dimension.
func.func @rms_weight(%x: tensor<2x8xf32>, %w: tensor<7xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{'weight' dimension 0 is 7 but the last dimension of 'x' is 8}}
  %y = dsv3.rms_norm %x, %w {epsilon = 1.0e-6 : f64} : (tensor<2x8xf32>, tensor<7xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

// RoPE needs one frequency per pair.
func.func @rope_freq(%x: tensor<1x2x1x4xf32>, %p: tensor<1x2xi64>) -> tensor<1x2x1x4xf32> {
  // expected-error @+1 {{inv_freq has 1 entries, expected 2}}
  %y = dsv3.rope %x, %p {inv_freq = array<f64: 1.0>, attention_scaling = 1.0 : f64} : (tensor<1x2x1x4xf32>, tensor<1x2xi64>) -> tensor<1x2x1x4xf32>
  return %y : tensor<1x2x1x4xf32>
}

// -----

// RoPE on an odd dimension.
func.func @rope_odd(%x: tensor<1x2x1x3xf32>, %p: tensor<1x2xi64>) -> tensor<1x2x1x3xf32> {
  // expected-error @+1 {{rotary dimension must be even, got 3}}
  %y = dsv3.rope %x, %p {inv_freq = array<f64: 1.0>, attention_scaling = 1.0 : f64} : (tensor<1x2x1x3xf32>, tensor<1x2xi64>) -> tensor<1x2x1x3xf32>
  return %y : tensor<1x2x1x3xf32>
}

// -----

// RoPE positions must be one per token.
func.func @rope_positions(%x: tensor<2x3x1x2xf32>, %p: tensor<2x4xi64>) -> tensor<2x3x1x2xf32> {
  // expected-error @+1 {{'positions' dimension 1 is 4 but [B, T] of 'x' is 3}}
  %y = dsv3.rope %x, %p {inv_freq = array<f64: 1.0>, attention_scaling = 1.0 : f64} : (tensor<2x3x1x2xf32>, tensor<2x4xi64>) -> tensor<2x3x1x2xf32>
  return %y : tensor<2x3x1x2xf32>
}

// -----

// Positions start at a non-negative offset.
func.func @positions_offset() -> tensor<1x4xi64> {
  // expected-error @+1 {{offset must not be negative}}
  %p = dsv3.positions {offset = -1 : i64} : tensor<1x4xi64>
  return %p : tensor<1x4xi64>
}

// -----

// n_group must divide the experts.
func.func @router_groups(%x: tensor<4x8xf32>, %r: tensor<6x8xf32>, %b: tensor<6xf32>) -> tensor<4x2xi64> {
  // expected-error @+1 {{n_group (4) must divide the number of experts (6)}}
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 2 : i64, n_group = 4 : i64, topk_group = 2 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<4x8xf32>, tensor<6x8xf32>, tensor<6xf32>) -> (tensor<4x2xf32>, tensor<4x2xi64>)
  return %i : tensor<4x2xi64>
}

// -----

// topk_group cannot exceed n_group.
func.func @router_topk_group(%x: tensor<4x8xf32>, %r: tensor<8x8xf32>, %b: tensor<8xf32>) -> tensor<4x2xi64> {
  // expected-error @+1 {{topk_group (3) exceeds n_group (2)}}
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 2 : i64, n_group = 2 : i64, topk_group = 3 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> (tensor<4x2xf32>, tensor<4x2xi64>)
  return %i : tensor<4x2xi64>
}

// -----

// top_k larger than the experts of the kept groups.
func.func @router_topk(%x: tensor<4x8xf32>, %r: tensor<8x8xf32>, %b: tensor<8xf32>) -> tensor<4x5xi64> {
  // expected-error @+1 {{top_k (5) exceeds the experts in the kept groups (4)}}
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 5 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> (tensor<4x5xf32>, tensor<4x5xi64>)
  return %i : tensor<4x5xi64>
}

// -----

// Routing bias of the wrong length.
func.func @router_bias(%x: tensor<4x8xf32>, %r: tensor<8x8xf32>, %b: tensor<7xf32>) -> tensor<4x2xi64> {
  // expected-error @+1 {{'bias' dimension 0 is 7 but [experts] is 8}}
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 2 : i64, n_group = 1 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<7xf32>) -> (tensor<4x2xf32>, tensor<4x2xi64>)
  return %i : tensor<4x2xi64>
}

// -----

// Grouped expert weight whose input width is not the rows' width.
func.func @grouped_in(%x: tensor<8x8xf32>, %w: tensor<3x5x6xf32>, %o: tensor<4xi64>) -> tensor<8x5xf32> {
  // expected-error @+1 {{'weight' dimension 2 is 6 but the row width of the input is 8}}
  %y = dsv3.grouped_linear %x, %w, %o : (tensor<8x8xf32>, tensor<3x5x6xf32>, tensor<4xi64>) -> tensor<8x5xf32>
  return %y : tensor<8x5xf32>
}

// -----

// Group bounds must number experts+1.
func.func @grouped_offsets(%x: tensor<8x8xf32>, %w: tensor<3x5x8xf32>, %o: tensor<3xi64>) -> tensor<8x5xf32> {
  // expected-error @+1 {{'offsets' dimension 0 is 3 but [experts+1] of the weight is 4}}
  %y = dsv3.grouped_linear %x, %w, %o : (tensor<8x8xf32>, tensor<3x5x8xf32>, tensor<3xi64>) -> tensor<8x5xf32>
  return %y : tensor<8x5xf32>
}

// -----

// The input gradient reads the weight's output dimension.
func.func @grouped_grad_in(%dy: tensor<8x5xf32>, %w: tensor<3x6x8xf32>, %o: tensor<4xi64>) -> tensor<8x8xf32> {
  // expected-error @+1 {{'weight' dimension 1 is 6 but the row width of the input is 5}}
  %y = dsv3.grouped_linear_grad_input %dy, %w, %o : (tensor<8x5xf32>, tensor<3x6x8xf32>, tensor<4xi64>) -> tensor<8x8xf32>
  return %y : tensor<8x8xf32>
}

// -----

func.func @grouped_grad_weight(%dy: tensor<8x5xf32>, %x: tensor<8x8xf32>, %o: tensor<4xi64>) -> tensor<3x8x5xf32> {
  // expected-error @+1 {{'dweight' dimension 1 is 8 but [experts, out, in] is 5}}
  %y = dsv3.grouped_linear_grad_weight %dy, %x, %o {num_experts = 3 : i64} : (tensor<8x5xf32>, tensor<8x8xf32>, tensor<4xi64>) -> tensor<3x8x5xf32>
  return %y : tensor<3x8x5xf32>
}

// -----

// Dispatch makes one row per (token, slot).
func.func @dispatch_rows(%x: tensor<4x8xf32>, %i: tensor<4x2xi64>) -> tensor<4x8xf32> {
  // expected-error @+1 {{'rows' dimension 0 is 4 but [tokens*top_k, hidden] is 8}}
  %r, %a, %b, %o = dsv3.moe_dispatch %x, %i {num_experts = 3 : i64} : (tensor<4x8xf32>, tensor<4x2xi64>) -> (tensor<4x8xf32>, tensor<4x2xi64>, tensor<8xi64>, tensor<4xi64>)
  return %r : tensor<4x8xf32>
}

// -----

func.func @dispatch_offsets(%x: tensor<4x8xf32>, %i: tensor<4x2xi64>) -> tensor<8x8xf32> {
  // expected-error @+1 {{'offsets' dimension 0 is 3 but [num_experts+1] is 4}}
  %r, %a, %b, %o = dsv3.moe_dispatch %x, %i {num_experts = 3 : i64} : (tensor<4x8xf32>, tensor<4x2xi64>) -> (tensor<8x8xf32>, tensor<4x2xi64>, tensor<8xi64>, tensor<3xi64>)
  return %r : tensor<8x8xf32>
}

// -----

func.func @combine_rows(%r: tensor<6x8xf32>, %w: tensor<4x2xf32>, %i: tensor<4x2xi64>) -> tensor<4x8xf32> {
  // expected-error @+1 {{'rows' dimension 0 is 6 but tokens*top_k of 'weights' is 8}}
  %y = dsv3.moe_combine %r, %w, %i : (tensor<6x8xf32>, tensor<4x2xf32>, tensor<4x2xi64>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// MLA without query compression must not carry q_a.
func.func @mla_q(%x: tensor<1x2x16xf32>, %qa: tensor<8x16xf32>, %kva: tensor<6x16xf32>, %kvn: tensor<4xf32>, %kvb: tensor<16x4xf32>, %o: tensor<16x8xf32>) -> tensor<1x2x16xf32> {
  // expected-error @+1 {{without query compression (q_lora_rank 0) only q_proj is allowed}}
  %a = dsv3.mla_attention %x q_a %qa kv_a %kva kv_a_norm %kvn kv_b %kvb o %o
      {num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<1x2x16xf32>, tensor<8x16xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<16x4xf32>, tensor<16x8xf32>) -> tensor<1x2x16xf32>
  return %a : tensor<1x2x16xf32>
}

// -----

// MLA kv_a rows must be kv_lora_rank + qk_rope_head_dim.
func.func @mla_kva(%x: tensor<1x2x16xf32>, %q: tensor<12x16xf32>, %kva: tensor<5x16xf32>, %kvn: tensor<4xf32>, %kvb: tensor<16x4xf32>, %o: tensor<16x8xf32>) -> tensor<1x2x16xf32> {
  // expected-error @+1 {{'kv_a' dimension 0 is 5 but [kv_lora_rank+qk_rope, hidden] is 6}}
  %a = dsv3.mla_attention %x q_proj %q kv_a %kva kv_a_norm %kvn kv_b %kvb o %o
      {num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<1x2x16xf32>, tensor<12x16xf32>, tensor<5x16xf32>, tensor<4xf32>, tensor<16x4xf32>, tensor<16x8xf32>) -> tensor<1x2x16xf32>
  return %a : tensor<1x2x16xf32>
}

// -----

// MTP projection must map 2*hidden to hidden.
func.func @mtp_proj(%h: tensor<1x2x4xf32>, %n: tensor<4xf32>, %eh: tensor<4x4xf32>) -> tensor<1x2x4xf32> {
  // expected-error @+1 {{'eh_proj' dimension 1 is 4 but [hidden, 2*hidden] is 8}}
  %x = dsv3.mtp_input %h, %h, %n, %n, %eh {rms_norm_eps = 1.0e-06 : f64}
      : (tensor<1x2x4xf32>, tensor<1x2x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4x4xf32>) -> tensor<1x2x4xf32>
  return %x : tensor<1x2x4xf32>
}

// -----

// Labels must match the logits' [batch, seq].
func.func @ce_labels(%l: tensor<2x4x8xf32>, %lab: tensor<2x3xi64>) -> tensor<f32> {
  // expected-error @+1 {{'labels' dimension 1 is 3 but [batch, seq] of the logits is 4}}
  %c = dsv3.cross_entropy %l, %lab : (tensor<2x4x8xf32>, tensor<2x3xi64>) -> tensor<f32>
  return %c : tensor<f32>
}

// -----

// Embedding result width comes from the table.
func.func @embedding_width(%ids: tensor<2x4xi64>, %t: tensor<10x8xf32>) -> tensor<2x4x7xf32> {
  // expected-error @+1 {{'result' dimension 2 is 7 but [batch, seq] of ids and the table width is 8}}
  %h = dsv3.embedding %ids, %t : tensor<2x4xi64>, tensor<10x8xf32> -> tensor<2x4x7xf32>
  return %h : tensor<2x4x7xf32>
}

// -----

// FP8 scales must have one entry per tile.
func.func @fp8_quantize_scales(%x: tensor<4x256xf32>) -> tensor<4x3xf32> {
  // expected-error @+1 {{'scales' dimension 1 is 3 but one scale per tile is 2}}
  %q, %s = dsv3.fp8_quantize %x {tile = array<i64: 1, 128>} : (tensor<4x256xf32>) -> (tensor<4x256xf8E4M3FN>, tensor<4x3xf32>)
  return %s : tensor<4x3xf32>
}

// -----

func.func @fp8_quantize_tile(%x: tensor<4x256xf32>) -> tensor<4x256xf8E4M3FN> {
  // expected-error @+1 {{'tile' must hold two sizes, got 1}}
  %q, %s = dsv3.fp8_quantize %x {tile = array<i64: 128>} : (tensor<4x256xf32>) -> (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>)
  return %q : tensor<4x256xf8E4M3FN>
}

// -----

func.func @fp8_dequantize_shape(%q: tensor<4x256xf8E4M3FN>, %s: tensor<4x2xf32>) -> tensor<4x128xf32> {
  // expected-error @+1 {{'result' dimension 1 is 128 but the shape of 'codes' is 256}}
  %x = dsv3.fp8_dequantize %q, %s {tile = array<i64: 1, 128>} : (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>) -> tensor<4x128xf32>
  return %x : tensor<4x128xf32>
}

// -----

func.func @fp8_gemm_k(%a: tensor<4x256xf8E4M3FN>, %sa: tensor<4x2xf32>, %b: tensor<8x128xf8E4M3FN>, %sb: tensor<1x1xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{'b' dimension 1 is 128 but the K dimension of 'a' is 256}}
  %y = dsv3.fp8_gemm %a, %sa, %b, %sb {promotion_interval = 128} : (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>, tensor<8x128xf8E4M3FN>, tensor<1x1xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

func.func @fp8_gemm_interval(%a: tensor<4x256xf8E4M3FN>, %sa: tensor<4x2xf32>, %b: tensor<8x256xf8E4M3FN>, %sb: tensor<1x2xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{promotion_interval must be 128 (the K tile of the scales and of the CPU kernel), got 64}}
  %y = dsv3.fp8_gemm %a, %sa, %b, %sb {promotion_interval = 64} : (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>, tensor<8x256xf8E4M3FN>, tensor<1x2xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

func.func @fp8_gemm_row_tiles(%a: tensor<4x256xf8E4M3FN>, %sa: tensor<2x2xf32>, %b: tensor<8x256xf8E4M3FN>, %sb: tensor<1x2xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{'a_scales' has 2 row tiles, expected 4 (1-row tiles) or 1 (128-row tiles)}}
  %y = dsv3.fp8_gemm %a, %sa, %b, %sb {promotion_interval = 128} : (tensor<4x256xf8E4M3FN>, tensor<2x2xf32>, tensor<8x256xf8E4M3FN>, tensor<1x2xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// Grouped row tiles need one extra scale row per group.
func.func @fp8_quantize_groups(%x: tensor<256x8xf32>, %o: tensor<5xi64>) -> tensor<2x8xf32> {
  // expected-error @+1 {{'scales' dimension 0 is 2 but one scale per tile, plus one row of tiles per group is 6}}
  %q, %s = dsv3.fp8_quantize %x groups %o {tile = array<i64: 128, 1>} : (tensor<256x8xf32>, tensor<5xi64>) -> (tensor<256x8xf8E4M3FN>, tensor<2x8xf32>)
  return %s : tensor<2x8xf32>
}

// -----

func.func @fp8_quantize_groups_rank(%x: tensor<2x256x8xf32>, %o: tensor<3xi64>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{'groups' applies to a matrix 'x', got rank 3}}
  %q, %s = dsv3.fp8_quantize %x groups %o {tile = array<i64: 128, 1>} : (tensor<2x256x8xf32>, tensor<3xi64>) -> (tensor<2x256x8xf8E4M3FN>, tensor<2x4x8xf32>)
  return %s : tensor<2x4x8xf32>
}

// -----

// Stacked expert weights have blocks per expert.
func.func @fp8_quantize_stacked(%w: tensor<4x32x256xf32>) -> tensor<4x1x1xf32> {
  // expected-error @+1 {{'scales' dimension 2 is 1 but one scale per tile is 2}}
  %q, %s = dsv3.fp8_quantize %w {tile = array<i64: 128, 128>} : (tensor<4x32x256xf32>) -> (tensor<4x32x256xf8E4M3FN>, tensor<4x1x1xf32>)
  return %s : tensor<4x1x1xf32>
}

// -----

func.func @fp8_m_grouped_gemm_blocks(%a: tensor<64x256xf8E4M3FN>, %sa: tensor<64x2xf32>, %b: tensor<4x32x256xf8E4M3FN>, %sb: tensor<1x1x2xf32>, %o: tensor<5xi64>) -> tensor<64x32xf32> {
  // expected-error @+1 {{'b_scales' dimension 0 is 1 but one scale per 128x128 block of each expert is 4}}
  %y = dsv3.fp8_m_grouped_gemm %a, %sa, %b, %sb, %o {promotion_interval = 128} : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<4x32x256xf8E4M3FN>, tensor<1x1x2xf32>, tensor<5xi64>) -> tensor<64x32xf32>
  return %y : tensor<64x32xf32>
}

// -----

func.func @fp8_m_grouped_gemm_offsets(%a: tensor<64x256xf8E4M3FN>, %sa: tensor<64x2xf32>, %b: tensor<4x32x256xf8E4M3FN>, %sb: tensor<4x1x2xf32>, %o: tensor<4xi64>) -> tensor<64x32xf32> {
  // expected-error @+1 {{'offsets' dimension 0 is 4 but [experts+1] of 'b' is 5}}
  %y = dsv3.fp8_m_grouped_gemm %a, %sa, %b, %sb, %o {promotion_interval = 128} : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>, tensor<4xi64>) -> tensor<64x32xf32>
  return %y : tensor<64x32xf32>
}

// -----

func.func @fp8_k_grouped_gemm_tiles(%a: tensor<256x32xf8E4M3FN>, %sa: tensor<2x32xf32>, %b: tensor<256x64xf8E4M3FN>, %sb: tensor<6x64xf32>, %o: tensor<5xi64>) -> tensor<4x32x64xf32> {
  // expected-error @+1 {{'a_scales' dimension 0 is 2 but grouped 128x1 tiles of 'a' is 6}}
  %y = dsv3.fp8_k_grouped_gemm %a, %sa, %b, %sb, %o {promotion_interval = 128} : (tensor<256x32xf8E4M3FN>, tensor<2x32xf32>, tensor<256x64xf8E4M3FN>, tensor<6x64xf32>, tensor<5xi64>) -> tensor<4x32x64xf32>
  return %y : tensor<4x32x64xf32>
}

// -----

func.func @fp8_k_grouped_gemm_result(%a: tensor<256x32xf8E4M3FN>, %sa: tensor<6x32xf32>, %b: tensor<256x64xf8E4M3FN>, %sb: tensor<6x64xf32>, %o: tensor<5xi64>) -> tensor<4x64x32xf32> {
  // expected-error @+1 {{'result' dimension 1 is 64 but [experts, M, N] of the operands is 32}}
  %y = dsv3.fp8_k_grouped_gemm %a, %sa, %b, %sb, %o {promotion_interval = 128} : (tensor<256x32xf8E4M3FN>, tensor<6x32xf32>, tensor<256x64xf8E4M3FN>, tensor<6x64xf32>, tensor<5xi64>) -> tensor<4x64x32xf32>
  return %y : tensor<4x64x32xf32>
}

// -----

// MLA core: the shared rope key must have the rope width of the queries.
func.func @mla_core_k_rope(%x: tensor<2x4x3x4xf32>, %kr: tensor<2x4x3xf32>) -> tensor<2x4x3x4xf32> {
  // expected-error @+1 {{'k_rope' dimension 2 is 3 but [B, Tk, rope dim] is 4}}
  %c = dsv3.mla_core %x, %x, %x, %kr, %x {softmax_scale = 0.5 : f64}
      : (tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x4x3xf32>, tensor<2x4x3x4xf32>) -> tensor<2x4x3x4xf32>
  return %c : tensor<2x4x3x4xf32>
}

// -----

// More queries than keys: the queries must be the last key positions.
func.func @mla_core_prefix(%q: tensor<2x4x3x4xf32>, %k: tensor<2x2x3x4xf32>, %kr: tensor<2x2x4xf32>) -> tensor<2x4x3x4xf32> {
  // expected-error @+1 {{has 2 keys for 4 queries; the queries are the last positions of the keys}}
  %c = dsv3.mla_core %q, %q, %k, %kr, %k {softmax_scale = 0.5 : f64}
      : (tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x2x3x4xf32>, tensor<2x2x4xf32>, tensor<2x2x3x4xf32>) -> tensor<2x4x3x4xf32>
  return %c : tensor<2x4x3x4xf32>
}

// -----

// MLA core with a zero softmax scale.
func.func @mla_core_scale(%x: tensor<2x4x3x4xf32>, %kr: tensor<2x4x4xf32>) -> tensor<2x4x3x4xf32> {
  // expected-error @+1 {{softmax_scale must be positive}}
  %c = dsv3.mla_core %x, %x, %x, %kr, %x {softmax_scale = 0.0 : f64}
      : (tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x4x4xf32>, tensor<2x4x3x4xf32>) -> tensor<2x4x3x4xf32>
  return %c : tensor<2x4x3x4xf32>
}

// -----

// MLP down projection whose input width is not the inner size.
func.func @mlp_down(%x: tensor<1x4x6xf32>, %g: tensor<8x6xf32>, %u: tensor<8x6xf32>, %d: tensor<6x7xf32>) -> tensor<1x4x6xf32> {
  // expected-error @+1 {{'down' dimension 1 is 7 but [hidden, inner] is 8}}
  %y = dsv3.mlp %x, %g, %u, %d : (tensor<1x4x6xf32>, tensor<8x6xf32>, tensor<8x6xf32>, tensor<6x7xf32>) -> tensor<1x4x6xf32>
  return %y : tensor<1x4x6xf32>
}

// -----

// MoE expert down projections whose input width is not the expert inner size.
func.func @moe_expert_down(%x: tensor<2x8x16xf32>, %r: tensor<4x16xf32>, %b: tensor<4xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x7xf32>) -> tensor<2x8x16xf32> {
  // expected-error @+1 {{'expert_down' dimension 2 is 7 but [experts, hidden, inner] is 8}}
  %y, %sel = dsv3.moe %x router %r bias %b experts %g, %u, %d
      {top_k = 2 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 2.5 : f64}
      : (tensor<2x8x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x7xf32>) -> (tensor<2x8x16xf32>, tensor<16x2xi64>)
  return %y : tensor<2x8x16xf32>
}

// -----

// MoE routing: n_group must divide the experts.
func.func @moe_groups(%x: tensor<2x8x16xf32>, %r: tensor<4x16xf32>, %b: tensor<4xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<2x8x16xf32> {
  // expected-error @+1 {{n_group (3) must divide the number of experts (4)}}
  %y, %sel = dsv3.moe %x router %r bias %b experts %g, %u, %d
      {top_k = 2 : i64, n_group = 3 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 2.5 : f64}
      : (tensor<2x8x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> (tensor<2x8x16xf32>, tensor<16x2xi64>)
  return %y : tensor<2x8x16xf32>
}

// -----

// SwiGLU gate and up of different shapes.
func.func @swiglu_shape(%g: tensor<2x4xf32>, %u: tensor<2x3xf32>) -> tensor<2x4xf32> {
  // expected-error @+1 {{gate, up and result must have the same type}}
  %s = dsv3.swiglu %g, %u : (tensor<2x4xf32>, tensor<2x3xf32>) -> tensor<2x4xf32>
  return %s : tensor<2x4xf32>
}

// -----

// Balance loss: one row of expert ids per token of the logits.
func.func @balance_loss_tokens(%l: tensor<1x2x2xf32>, %ids: tensor<3x1xi64>) -> tensor<f32> {
  // expected-error @+1 {{'expert_ids' dimension 0 is 3 but batch*seq of the logits is 2}}
  %b = dsv3.moe_balance_loss %l, %ids {alpha = 0.1 : f64} : (tensor<1x2x2xf32>, tensor<3x1xi64>) -> tensor<f32>
  return %b : tensor<f32>
}

// -----

// Balance loss with a negative weight.
func.func @balance_loss_alpha(%l: tensor<1x2x2xf32>, %ids: tensor<2x1xi64>) -> tensor<f32> {
  // expected-error @+1 {{alpha must not be negative}}
  %b = dsv3.moe_balance_loss %l, %ids {alpha = -0.1 : f64} : (tensor<1x2x2xf32>, tensor<2x1xi64>) -> tensor<f32>
  return %b : tensor<f32>
}

// -----

// Linear input gradient whose weight does not match the width of dy.
func.func @linear_grad_input_width(%dy: tensor<4x16xf32>, %w: tensor<15x8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{'weight' dimension 0 is 15 but the last dimension of 'dy' is 16}}
  %dx = dsv3.linear_grad_input %dy, %w : (tensor<4x16xf32>, tensor<15x8xf32>) -> tensor<4x8xf32>
  return %dx : tensor<4x8xf32>
}

// -----

// Linear weight gradient over dy and x with different token counts.
func.func @linear_grad_weight_tokens(%dy: tensor<4x16xf32>, %x: tensor<3x8xf32>) -> tensor<16x8xf32> {
  // expected-error @+1 {{'x' dimension 0 is 3 but the matching dimension of 'dy' is 4}}
  %dw = dsv3.linear_grad_weight %dy, %x : (tensor<4x16xf32>, tensor<3x8xf32>) -> tensor<16x8xf32>
  return %dw : tensor<16x8xf32>
}

// -----

// Linear weight gradient with a transposed result.
func.func @linear_grad_weight_result(%dy: tensor<4x16xf32>, %x: tensor<4x8xf32>) -> tensor<8x16xf32> {
  // expected-error @+1 {{'dweight' dimension 0 is 8 but [out, in] is 16}}
  %dw = dsv3.linear_grad_weight %dy, %x : (tensor<4x16xf32>, tensor<4x8xf32>) -> tensor<8x16xf32>
  return %dw : tensor<8x16xf32>
}

// -----

// Embedding gradient whose table width is not the width of dy.
func.func @embedding_grad_width(%ids: tensor<1x2xi64>, %dy: tensor<1x2x3xf32>) -> tensor<5x4xf32> {
  // expected-error @+1 {{'dy' dimension 2 is 3 but [batch, seq] of ids and the table width is 4}}
  %dt = dsv3.embedding_grad %ids, %dy : (tensor<1x2xi64>, tensor<1x2x3xf32>) -> tensor<5x4xf32>
  return %dt : tensor<5x4xf32>
}

// -----

// Router gradient: one gate-weight gradient per chosen expert.
func.func @router_grad_dweights(%l: tensor<4x8xf32>, %ids: tensor<4x2xi64>, %dw: tensor<4x3xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{'dweights' dimension 1 is 3 but the expert_ids shape is 2}}
  %dl = dsv3.moe_router_grad %l, %ids, %dw {norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<4x8xf32>, tensor<4x2xi64>, tensor<4x3xf32>) -> tensor<4x8xf32>
  return %dl : tensor<4x8xf32>
}

// -----

// Router gradient: logits and expert ids cover different tokens.
func.func @router_grad_tokens(%l: tensor<5x8xf32>, %ids: tensor<4x2xi64>, %dw: tensor<4x2xf32>) -> tensor<5x8xf32> {
  // expected-error @+1 {{'logits' dimension 0 is 5 but the token count of 'expert_ids' is 4}}
  %dl = dsv3.moe_router_grad %l, %ids, %dw {norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<5x8xf32>, tensor<4x2xi64>, tensor<4x2xf32>) -> tensor<5x8xf32>
  return %dl : tensor<5x8xf32>
}

// -----

// Entry-point result attributes are ABI facts and are verified.
// expected-error @+1 {{gradient result 0 names no 'dsv3.output_param'}}
func.func @gradient_without_param() -> (tensor<f32> {dsv3.output = "grad.w", dsv3.output_role = #dsv3.output_role<gradient>}) {
  %c = arith.constant dense<0.0> : tensor<f32>
  return %c : tensor<f32>
}

// -----

// expected-error @+1 {{'dsv3.output_role' of result 0 must be a #dsv3.output_role}}
func.func @role_as_string() -> (tensor<f32> {dsv3.output = "loss", dsv3.output_role = "loss"}) {
  %c = arith.constant dense<0.0> : tensor<f32>
  return %c : tensor<f32>
}

// -----

// expected-error @+1 {{unknown dsv3 result attribute 'dsv3.outptu'}}
func.func @misspelt() -> (tensor<f32> {dsv3.outptu = "loss"}) {
  %c = arith.constant dense<0.0> : tensor<f32>
  return %c : tensor<f32>
}

// -----

// expected-error @+1 {{'dsv3.input' of argument 0 must be a non-empty string}}
func.func @input_name_not_a_string(%x: tensor<f32> {dsv3.input = 3 : i64}) -> tensor<f32> {
  return %x : tensor<f32>
}

// -----

// expected-error @+1 {{unknown dsv3 argument attribute 'dsv3.inptu'}}
func.func @misspelt_input(%x: tensor<f32> {dsv3.inptu = "ids"}) -> tensor<f32> {
  return %x : tensor<f32>
}

// -----

// A node limit names both the nodes and the nodes a token may use.
func.func @router_node_limit_half(%x: tensor<4x8xf32>, %r: tensor<8x8xf32>, %b: tensor<8xf32>) -> tensor<4x2xi64> {
  // expected-error @+1 {{needs both 'nodes' and 'max_nodes', or neither}}
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 2 : i64, n_group = 1 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64, nodes = 2 : i64}
      : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> (tensor<4x2xf32>, tensor<4x2xi64>)
  return %i : tensor<4x2xi64>
}

// -----

// Groups must lie within nodes.
func.func @router_node_groups(%x: tensor<4x8xf32>, %r: tensor<8x8xf32>, %b: tensor<8xf32>) -> tensor<4x2xi64> {
  // expected-error @+1 {{the 2 groups must lie within the 4 nodes}}
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 2 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64, nodes = 4 : i64, max_nodes = 1 : i64}
      : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> (tensor<4x2xf32>, tensor<4x2xi64>)
  return %i : tensor<4x2xi64>
}

// -----

// A node's score needs ceil(top_k / max_nodes) of its experts.
func.func @router_node_pick(%x: tensor<4x8xf32>, %r: tensor<8x8xf32>, %b: tensor<8xf32>) -> tensor<4x3xi64> {
  // expected-error @+1 {{ceil(top_k / max_nodes) = 3 exceeds the experts of a node (2)}}
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 3 : i64, n_group = 1 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64, nodes = 4 : i64, max_nodes = 1 : i64}
      : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> (tensor<4x3xf32>, tensor<4x3xi64>)
  return %i : tensor<4x3xi64>
}

// -----

// A cache row is kv_lora_rank + qk_rope_head_dim wide.
func.func @cache_row_width(%x: tensor<2x3x16xf32>, %kva: tensor<6x16xf32>, %kvn: tensor<4xf32>, %p: tensor<2x3xi64>) -> tensor<2x3x5xf32> {
  // expected-error @+1 {{'result' dimension 2 is 5 but [batch, seq, kv_lora_rank+qk_rope] is 6}}
  %r = dsv3.mla_cache_row %x kv_a %kva kv_a_norm %kvn positions %p
      {kv_lora_rank = 4 : i64, qk_rope_head_dim = 2 : i64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<2x3x16xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<2x3xi64>) -> tensor<2x3x5xf32>
  return %r : tensor<2x3x5xf32>
}

// -----

// The cache holds one row per position of each sequence of the batch.
func.func @cached_attention_cache(%x: tensor<2x1x16xf32>, %q: tensor<12x16xf32>, %kvb: tensor<16x4xf32>, %o: tensor<16x8xf32>,
                                  %cache: tensor<3x10x6xf32>, %rows: tensor<2x1x6xf32>, %p: tensor<2x1xi64>) -> tensor<2x1x16xf32> {
  // expected-error @+1 {{'cache' dimension 0 is 3 but [batch, capacity, kv_lora_rank+qk_rope] is 2}}
  %a = dsv3.mla_cached_attention %x q_proj %q kv_b %kvb o %o cache %cache rows %rows positions %p
      {num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<2x1x16xf32>, tensor<12x16xf32>, tensor<16x4xf32>, tensor<16x8xf32>, tensor<3x10x6xf32>, tensor<2x1x6xf32>, tensor<2x1xi64>) -> tensor<2x1x16xf32>
  return %a : tensor<2x1x16xf32>
}

// -----

// W_UK and W_UV share the latent width of the cache rows.
func.func @absorbed_core_latent(%qn: tensor<2x1x2x3xf32>, %qr: tensor<2x1x2x2xf32>, %uk: tensor<2x3x4xf32>, %uv: tensor<2x3x5xf32>,
                                %cache: tensor<2x5x6xf32>, %rows: tensor<2x1x6xf32>, %p: tensor<2x1xi64>) -> tensor<2x1x2x3xf32> {
  // expected-error @+1 {{'w_uv' dimension 2 is 5 but [H, v_head, kv_lora_rank] is 4}}
  %o = dsv3.mla_absorbed_core %qn, %qr, %uk, %uv, %cache, %rows, %p {softmax_scale = 0.5 : f64}
      : (tensor<2x1x2x3xf32>, tensor<2x1x2x2xf32>, tensor<2x3x4xf32>, tensor<2x3x5xf32>, tensor<2x5x6xf32>, tensor<2x1x6xf32>, tensor<2x1xi64>) -> tensor<2x1x2x3xf32>
  return %o : tensor<2x1x2x3xf32>
}
