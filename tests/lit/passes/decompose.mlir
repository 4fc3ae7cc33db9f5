// RUN: dsv3-opt %s -dsv3-decompose -split-input-file | FileCheck %s

// MLA with query compression: latent norms, RoPE on the rope parts only, the
// shared rope key collapsed to [B,T,R], then the core and the output
// projection.
// CHECK-LABEL: func.func @mla
func.func @mla(%x: tensor<2x8x16xf32>, %qa: tensor<8x16xf32>, %qn: tensor<8xf32>, %qb: tensor<12x8xf32>,
               %kva: tensor<6x16xf32>, %kvn: tensor<4xf32>, %kvb: tensor<16x4xf32>, %o: tensor<16x8xf32>) -> tensor<2x8x16xf32> {
  // CHECK: %[[CQ:.*]] = dsv3.linear %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<8x16xf32>) -> tensor<2x8x8xf32>
  // CHECK: %[[NQ:.*]] = dsv3.rms_norm %[[CQ]]
  // CHECK: %[[Q:.*]] = dsv3.linear %[[NQ]], {{.*}} -> tensor<2x8x12xf32>
  // CHECK: tensor.expand_shape %[[Q]] {{.*}} into tensor<2x8x2x6xf32>
  // CHECK: %[[QR:.*]] = tensor.extract_slice {{.*}}[0, 0, 0, 4] [2, 8, 2, 2] [1, 1, 1, 1]
  // CHECK: dsv3.rope %[[QR]]
  // CHECK: %[[KVA:.*]] = dsv3.linear {{.*}} -> tensor<2x8x6xf32>
  // CHECK: tensor.extract_slice %[[KVA]][0, 0, 0] [2, 8, 4]
  // CHECK: dsv3.rms_norm
  // CHECK: %[[KR:.*]] = dsv3.rope {{.*}} -> tensor<2x8x1x2xf32>
  // CHECK: tensor.collapse_shape %[[KR]] {{\[\[}}0], [1], [2, 3]] : tensor<2x8x1x2xf32> into tensor<2x8x2xf32>
  // CHECK: %[[CORE:.*]] = dsv3.mla_core {{.*}} {softmax_scale = 4.000000e-01 : f64}
  // CHECK: %[[FLAT:.*]] = tensor.collapse_shape %[[CORE]] {{.*}} into tensor<2x8x8xf32>
  // CHECK: dsv3.linear %[[FLAT]], {{.*}} -> tensor<2x8x16xf32>
  // CHECK-NOT: dsv3.mla_attention
  %a = dsv3.mla_attention %x q_a %qa q_a_norm %qn q_b %qb kv_a %kva kv_a_norm %kvn kv_b %kvb o %o
      {num_heads = 2 : i64, q_lora_rank = 8 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<2x8x16xf32>, tensor<8x16xf32>, tensor<8xf32>, tensor<12x8xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<16x4xf32>, tensor<16x8xf32>) -> tensor<2x8x16xf32>
  return %a : tensor<2x8x16xf32>
}

// -----

// Without query compression a single q_proj replaces q_a/q_b.
// CHECK-LABEL: func.func @mla_no_q_lora
func.func @mla_no_q_lora(%x: tensor<1x4x16xf32>, %q: tensor<12x16xf32>, %kva: tensor<6x16xf32>, %kvn: tensor<4xf32>,
                         %kvb: tensor<16x4xf32>, %o: tensor<16x8xf32>) -> tensor<1x4x16xf32> {
  // CHECK: dsv3.linear %{{.*}}, %{{.*}} : (tensor<1x4x16xf32>, tensor<12x16xf32>) -> tensor<1x4x12xf32>
  // CHECK-NOT: dsv3.rms_norm
  // CHECK: dsv3.linear %{{.*}}, %{{.*}} : (tensor<1x4x16xf32>, tensor<6x16xf32>) -> tensor<1x4x6xf32>
  // CHECK: dsv3.rms_norm {{.*}} : (tensor<1x4x4xf32>, tensor<4xf32>)
  %a = dsv3.mla_attention %x q_proj %q kv_a %kva kv_a_norm %kvn kv_b %kvb o %o
      {num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<1x4x16xf32>, tensor<12x16xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<16x4xf32>, tensor<16x8xf32>) -> tensor<1x4x16xf32>
  return %a : tensor<1x4x16xf32>
}

// -----

// MoE: tokens flattened, router then experts, shared experts added.
// CHECK-LABEL: func.func @moe
func.func @moe(%x: tensor<2x8x16xf32>, %r: tensor<4x16xf32>, %b: tensor<4xf32>, %g: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>,
               %sg: tensor<8x16xf32>, %sd: tensor<16x8xf32>) -> (tensor<2x8x16xf32>, tensor<16x2xi64>) {
  // CHECK: %[[T:.*]] = tensor.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : tensor<2x8x16xf32> into tensor<16x16xf32>
  // CHECK: %[[W:.*]], %[[IDS:.*]] = dsv3.moe_router %[[T]], {{.*}} {n_group = 2 : i64, norm_topk_prob = true, routed_scaling_factor = 2.500000e+00 : f64, top_k = 2 : i64, topk_group = 1 : i64}
  // CHECK: %[[ROWS:.*]], %[[ROS:.*]], %{{.*}}, %[[OFF:.*]] = dsv3.moe_dispatch %[[T]], %[[IDS]] {num_experts = 4 : i64} : (tensor<16x16xf32>, tensor<16x2xi64>) -> (tensor<32x16xf32>, tensor<16x2xi64>, tensor<32xi64>, tensor<5xi64>)
  // CHECK: %[[G:.*]] = dsv3.grouped_linear %[[ROWS]], %{{.*}}, %[[OFF]] : {{.*}} -> tensor<32x8xf32>
  // CHECK: %[[U:.*]] = dsv3.grouped_linear %[[ROWS]], %{{.*}}, %[[OFF]]
  // CHECK: %[[A:.*]] = dsv3.swiglu %[[G]], %[[U]]
  // CHECK: %[[E:.*]] = dsv3.grouped_linear %[[A]], %{{.*}}, %[[OFF]] : {{.*}} -> tensor<32x16xf32>
  // CHECK: %[[Y:.*]] = dsv3.moe_combine %[[E]], %[[W]], %[[ROS]]
  // CHECK: dsv3.swiglu
  // CHECK: %[[S:.*]] = dsv3.linear {{.*}} -> tensor<16x16xf32>
  // CHECK: %[[SUM:.*]] = arith.addf %[[Y]], %[[S]]
  // CHECK: tensor.expand_shape %[[SUM]]
  // CHECK: return {{.*}}, %[[IDS]]
  %y, %sel = dsv3.moe %x router %r bias %b experts %g, %g, %d shared %sg, %sg, %sd
      {top_k = 2 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 2.5 : f64}
      : (tensor<2x8x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>) -> (tensor<2x8x16xf32>, tensor<16x2xi64>)
  return %y, %sel : tensor<2x8x16xf32>, tensor<16x2xi64>
}

// -----

// MTP input: embedding half first in the concatenation.
// CHECK-LABEL: func.func @mtp
func.func @mtp(%h: tensor<1x3x4xf32>, %e: tensor<1x3x4xf32>, %n1: tensor<4xf32>, %n2: tensor<4xf32>, %eh: tensor<4x8xf32>) -> tensor<1x3x4xf32> {
  // CHECK: %[[E:.*]] = dsv3.rms_norm %{{.*}}, %[[N1:.*]] {
  // CHECK: %[[H:.*]] = dsv3.rms_norm
  // CHECK: %[[C0:.*]] = tensor.insert_slice %[[E]] into %{{.*}}[0, 0, 0] [1, 3, 4]
  // CHECK: %[[C1:.*]] = tensor.insert_slice %[[H]] into %[[C0]][0, 0, 4] [1, 3, 4]
  // CHECK: dsv3.linear %[[C1]]
  %x = dsv3.mtp_input %h, %e, %n1, %n2, %eh {rms_norm_eps = 1.0e-06 : f64}
      : (tensor<1x3x4xf32>, tensor<1x3x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4x8xf32>) -> tensor<1x3x4xf32>
  return %x : tensor<1x3x4xf32>
}

// The query path above rejects a latent norm on the query (a mutant with an
// RMSNorm between the query projection and kv_a).
// RUN: dsv3-opt %s -dsv3-decompose -split-input-file \
// RUN:   | awk '/tensor<1x4x12xf32> into tensor<1x4x2x6xf32>/ { print "    %m = dsv3.rms_norm %0, %arg3 : (tensor<1x4x12xf32>, tensor<12xf32>) -> tensor<1x4x12xf32>" } 1' \
// RUN:   | not FileCheck %s

// -----

// A cache row: the latent after its norm, then the rope key rotated at the
// given positions, side by side ([B, T, kv_lora_rank + rope]).
// CHECK-LABEL: func.func @cache_row
func.func @cache_row(%x: tensor<2x3x16xf32>, %kva: tensor<6x16xf32>, %kvn: tensor<4xf32>,
                     %p: tensor<2x3xi64>) -> tensor<2x3x6xf32> {
  // CHECK: %[[KVA:.*]] = dsv3.linear {{.*}} -> tensor<2x3x6xf32>
  // CHECK: %[[C:.*]] = dsv3.rms_norm
  // CHECK: %[[KR:.*]] = dsv3.rope %{{.*}}, %arg3
  // CHECK: %[[K:.*]] = tensor.collapse_shape %[[KR]]
  // CHECK: %[[E:.*]] = tensor.empty() : tensor<2x3x6xf32>
  // CHECK: %[[R1:.*]] = tensor.insert_slice %[[C]] into %[[E]][0, 0, 0] [2, 3, 4] [1, 1, 1]
  // CHECK: tensor.insert_slice %[[K]] into %[[R1]][0, 0, 4] [2, 3, 2] [1, 1, 1]
  // CHECK-NOT: dsv3.mla_cache_row
  %r = dsv3.mla_cache_row %x kv_a %kva kv_a_norm %kvn positions %p
      {kv_lora_rank = 4 : i64, qk_rope_head_dim = 2 : i64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<2x3x16xf32>, tensor<6x16xf32>, tensor<4xf32>, tensor<2x3xi64>) -> tensor<2x3x6xf32>
  return %r : tensor<2x3x6xf32>
}

// -----

// Decode over a cache in absorbed form: the query heads rotated at the
// step's positions, kv_b viewed per head and split into W_UK (the first
// qk_nope rows) and W_UV (the last v_head rows), the absorbed core over the
// cache and the new rows, then o_proj. Nothing is decompressed.
// CHECK-LABEL: func.func @cached_attention
func.func @cached_attention(%x: tensor<2x1x16xf32>, %q: tensor<12x16xf32>, %kvb: tensor<16x4xf32>,
                            %o: tensor<16x8xf32>, %cache: tensor<2x10x6xf32>, %rows: tensor<2x1x6xf32>,
                            %p: tensor<2x1xi64>) -> tensor<2x1x16xf32> {
  // CHECK: dsv3.rope %{{.*}}, %arg6
  // CHECK: %[[KVB:.*]] = tensor.expand_shape %arg2 {{\[\[}}0, 1], [2]] output_shape [2, 8, 4] : tensor<16x4xf32> into tensor<2x8x4xf32>
  // CHECK: %[[UK:.*]] = tensor.extract_slice %[[KVB]][0, 0, 0] [2, 4, 4] [1, 1, 1]
  // CHECK: %[[UV:.*]] = tensor.extract_slice %[[KVB]][0, 4, 0] [2, 4, 4] [1, 1, 1]
  // CHECK: %[[CORE:.*]] = dsv3.mla_absorbed_core %{{.*}}, %{{.*}}, %[[UK]], %[[UV]], %arg4, %arg5, %arg6 {softmax_scale = 4.000000e-01 : f64}
  // CHECK-SAME: -> tensor<2x1x2x4xf32>
  // CHECK: dsv3.linear {{.*}} -> tensor<2x1x16xf32>
  // CHECK-NOT: dsv3.mla_cached_attention
  // CHECK-NOT: dsv3.mla_core
  %a = dsv3.mla_cached_attention %x q_proj %q kv_b %kvb o %o cache %cache rows %rows positions %p
      {num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64,
       qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, softmax_scale = 0.4 : f64, rms_norm_eps = 1.0e-06 : f64,
       rope_inv_freq = array<f64: 1.0>, rope_attention_scaling = 1.0 : f64}
      : (tensor<2x1x16xf32>, tensor<12x16xf32>, tensor<16x4xf32>, tensor<16x8xf32>, tensor<2x10x6xf32>, tensor<2x1x6xf32>, tensor<2x1xi64>) -> tensor<2x1x16xf32>
  return %a : tensor<2x1x16xf32>
}
