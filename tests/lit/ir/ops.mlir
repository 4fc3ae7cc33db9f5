// RUN: dsv3-opt %s | dsv3-opt | FileCheck %s
// Every dsv3 op prints and parses back unchanged.

// CHECK-LABEL: func.func @model_ops
func.func @model_ops(%ids: tensor<2x8xi64>) -> (tensor<2x8x16xf32>, tensor<16x2xi64>) {
  // CHECK: dsv3.param "model.embed_tokens.weight" : tensor<32x16xf32>
  %emb = dsv3.param "model.embed_tokens.weight" : tensor<32x16xf32>
  // CHECK: dsv3.embedding %{{.*}}, %{{.*}} : tensor<2x8xi64>, tensor<32x16xf32> -> tensor<2x8x16xf32>
  %h = dsv3.embedding %ids, %emb : tensor<2x8xi64>, tensor<32x16xf32> -> tensor<2x8x16xf32>
  %qa = dsv3.param "qa" : tensor<8x16xf32>
  %qn = dsv3.param "qn" : tensor<8xf32>
  %qb = dsv3.param "qb" : tensor<12x8xf32>
  %kva = dsv3.param "kva" : tensor<6x16xf32>
  %kvn = dsv3.param "kvn" : tensor<4xf32>
  %kvb = dsv3.param "kvb" : tensor<16x4xf32>
  %o = dsv3.param "o" : tensor<16x8xf32>
  // CHECK: dsv3.mla_attention %{{.*}} q_a %{{.*}} q_a_norm %{{.*}} q_b %{{.*}} kv_a %{{.*}} kv_a_norm %{{.*}} kv_b %{{.*}} o %{{.*}} {kv_lora_rank = 4 : i64, num_heads = 2 : i64
  %a = dsv3.mla_attention %h q_a %qa q_a_norm %qn q_b %qb kv_a %kva kv_a_norm %kvn kv_b %kvb o %o
      {num_heads = 2 : i64, q_lora_rank = 8 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<2x8x16xf32>, tensor<8x16xf32>, tensor<8xf32>, tensor<12x8xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<16x4xf32>, tensor<16x8xf32>) -> tensor<2x8x16xf32>
  %r = dsv3.param "router" : tensor<4x16xf32>
  %b = dsv3.param "bias" : tensor<4xf32>
  // CHECK: dsv3.param "experts.*.gate" stack 4 : tensor<4x8x16xf32>
  %g = dsv3.param "experts.*.gate" stack 4 : tensor<4x8x16xf32>
  %u = dsv3.param "experts.*.up" stack 4 : tensor<4x8x16xf32>
  %d = dsv3.param "experts.*.down" stack 4 : tensor<4x16x8xf32>
  // CHECK: dsv3.moe %{{.*}} router %{{.*}} bias %{{.*}} experts %{{.*}}, %{{.*}}, %{{.*}} {n_group = 2 : i64
  %y, %sel = dsv3.moe %a router %r bias %b experts %g, %u, %d
      {top_k = 2 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 2.5 : f64}
      : (tensor<2x8x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> (tensor<2x8x16xf32>, tensor<16x2xi64>)
  return %y, %sel : tensor<2x8x16xf32>, tensor<16x2xi64>
}

// CHECK-LABEL: func.func @tensor_ops
func.func @tensor_ops(%x: tensor<2x4x3x4xf32>, %kr: tensor<2x4x4xf32>, %l: tensor<2x4x8xf32>, %lab: tensor<2x4xi64>)
    -> (tensor<2x4x3x4xf32>, tensor<f32>) {
  // CHECK: %[[P:.*]] = dsv3.positions {offset = 3 : i64} : tensor<2x4xi64>
  // CHECK: dsv3.rope %{{.*}}, %[[P]] {attention_scaling = 1.000000e+00 : f64, inv_freq = array<f64: 1.000000e+00, 1.000000e-01>}
  %p = dsv3.positions {offset = 3 : i64} : tensor<2x4xi64>
  %r = dsv3.rope %x, %p {inv_freq = array<f64: 1.0, 0.1>, attention_scaling = 1.0 : f64}
      : (tensor<2x4x3x4xf32>, tensor<2x4xi64>) -> tensor<2x4x3x4xf32>
  // CHECK: dsv3.mla_core
  %c = dsv3.mla_core %x, %r, %x, %kr, %x {softmax_scale = 0.5 : f64}
      : (tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x4x4xf32>, tensor<2x4x3x4xf32>) -> tensor<2x4x3x4xf32>
  // One query after a cached prefix of three keys.
  // CHECK: dsv3.mla_core {{.*}} -> tensor<2x1x3x4xf32>
  %q1 = tensor.extract_slice %x[0, 3, 0, 0] [2, 1, 3, 4] [1, 1, 1, 1] : tensor<2x4x3x4xf32> to tensor<2x1x3x4xf32>
  %c1 = dsv3.mla_core %q1, %q1, %x, %kr, %x {softmax_scale = 0.5 : f64}
      : (tensor<2x1x3x4xf32>, tensor<2x1x3x4xf32>, tensor<2x4x3x4xf32>, tensor<2x4x4xf32>, tensor<2x4x3x4xf32>) -> tensor<2x1x3x4xf32>
  // CHECK: dsv3.swiglu
  %s = dsv3.swiglu %c, %r : (tensor<2x4x3x4xf32>, tensor<2x4x3x4xf32>) -> tensor<2x4x3x4xf32>
  // CHECK: dsv3.cross_entropy
  %ce = dsv3.cross_entropy %l, %lab : (tensor<2x4x8xf32>, tensor<2x4xi64>) -> tensor<f32>
  return %s, %ce : tensor<2x4x3x4xf32>, tensor<f32>
}

// CHECK-LABEL: func.func @fp8_ops
// CHECK: dsv3.fp8_quantize %arg0 {tile = array<i64: 1, 128>} : (tensor<64x256xf32>) -> (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>)
// CHECK: dsv3.fp8_quantize %arg1 {power_of_two_scales, tile = array<i64: 128, 128>} : (tensor<4x32x256xf32>) -> (tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>)
// CHECK: dsv3.fp8_quantize %arg0 groups %arg2 {tile = array<i64: 128, 1>} : (tensor<64x256xf32>, tensor<5xi64>) -> (tensor<64x256xf8E5M2>, tensor<5x256xf32>)
// CHECK: dsv3.fp8_dequantize
// CHECK: dsv3.fp8_gemm {{.*}} {promotion_interval = 128 : i64} : {{.*}} -> tensor<64x64xf32>
// CHECK: dsv3.fp8_m_grouped_gemm {{.*}} {promotion_interval = 128 : i64} : {{.*}} -> tensor<64x32xf32>
// CHECK: dsv3.fp8_k_grouped_gemm {{.*}} {promotion_interval = 128 : i64} : {{.*}} -> tensor<4x256x256xf32>
func.func @fp8_ops(%x: tensor<64x256xf32>, %w: tensor<4x32x256xf32>, %o: tensor<5xi64>) -> (tensor<64x256xf32>, tensor<64x64xf32>, tensor<64x32xf32>, tensor<4x256x256xf32>) {
  %q, %s = dsv3.fp8_quantize %x {tile = array<i64: 1, 128>} : (tensor<64x256xf32>) -> (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>)
  %qw, %sw = dsv3.fp8_quantize %w {power_of_two_scales, tile = array<i64: 128, 128>} : (tensor<4x32x256xf32>) -> (tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>)
  %qg, %sg = dsv3.fp8_quantize %x groups %o {tile = array<i64: 128, 1>} : (tensor<64x256xf32>, tensor<5xi64>) -> (tensor<64x256xf8E5M2>, tensor<5x256xf32>)
  %d = dsv3.fp8_dequantize %q, %s {tile = array<i64: 1, 128>} : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>) -> tensor<64x256xf32>
  %y = dsv3.fp8_gemm %q, %s, %q, %s {promotion_interval = 128} : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<64x256xf8E4M3FN>, tensor<64x2xf32>) -> tensor<64x64xf32>
  %m = dsv3.fp8_m_grouped_gemm %q, %s, %qw, %sw, %o {promotion_interval = 128} : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>, tensor<5xi64>) -> tensor<64x32xf32>
  %k = dsv3.fp8_k_grouped_gemm %qg, %sg, %qg, %sg, %o {promotion_interval = 128} : (tensor<64x256xf8E5M2>, tensor<5x256xf32>, tensor<64x256xf8E5M2>, tensor<5x256xf32>, tensor<5xi64>) -> tensor<4x256x256xf32>
  return %d, %y, %m, %k : tensor<64x256xf32>, tensor<64x64xf32>, tensor<64x32xf32>, tensor<4x256x256xf32>
}
