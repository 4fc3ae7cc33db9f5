// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize))' | FileCheck %s --check-prefixes=CHECK,DEFAULT
// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{format=e5m2 power-of-two-scales=true}))' | FileCheck %s --check-prefix=E5M2 --implicit-check-not=f8E4M3FN
// A mutant whose expert weights stay E4M3 (or lose pow2 scales) is rejected.
// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{format=e5m2 power-of-two-scales=true}))' \
// RUN:   | awk '/fp8_quantize/ && ++n == 10 { sub(/f8E5M2/, "f8E4M3FN") } 1' | not FileCheck %s --check-prefix=E5M2 --implicit-check-not=f8E4M3FN
// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{format=e5m2 power-of-two-scales=true}))' \
// RUN:   | awk '/fp8_quantize/ && ++n == 7 { sub(/power_of_two_scales, /, "") } 1' | not FileCheck %s --check-prefix=E5M2 --implicit-check-not=f8E4M3FN
// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{cache-activations=fp8}))' | FileCheck %s --check-prefix=CACHE
// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{gemms=fprop}))' | FileCheck %s --check-prefix=FPROP
// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{high-precision=q_proj}))' | FileCheck %s --check-prefix=HIGH
// RUN: dsv3-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{high-precision-roles=attention}))' | FileCheck %s --check-prefix=ROLES

// The three GEMMs of one layer. Forward: 1x128 activation tiles, 128x128
// weight blocks. dgrad: 1x128 tiles of dy, the same weight blocks read
// transposed. wgrad: 128x1 tiles of dy and x along tokens.
// CHECK-LABEL: func.func @layer
// DEFAULT: %[[X2:.*]] = tensor.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : tensor<2x96x256xf32> into tensor<192x256xf32>
// DEFAULT: %[[QX:.*]], %[[SX:.*]] = dsv3.fp8_quantize %[[X2]] {tile = array<i64: 1, 128>} : (tensor<192x256xf32>) -> (tensor<192x256xf8E4M3FN>, tensor<192x2xf32>)
// DEFAULT: %[[QW:.*]], %[[SW:.*]] = dsv3.fp8_quantize %[[W:.*]] {tile = array<i64: 128, 128>} : (tensor<320x256xf32>) -> (tensor<320x256xf8E4M3FN>, tensor<3x2xf32>)
// DEFAULT: %[[Y:.*]] = dsv3.fp8_gemm %[[QX]], %[[SX]], %[[QW]], %[[SW]] {promotion_interval = 128 : i64} : {{.*}} -> tensor<192x320xf32>
// DEFAULT: tensor.expand_shape %[[Y]] {{\[\[}}0, 1], [2]] output_shape [2, 96, 320]
// DEFAULT: %[[QDY:.*]], %[[SDY:.*]] = dsv3.fp8_quantize %{{.*}} {tile = array<i64: 1, 128>} : (tensor<192x320xf32>) -> (tensor<192x320xf8E4M3FN>, tensor<192x3xf32>)
// DEFAULT: dsv3.fp8_gemm %[[QDY]], %[[SDY]], %[[QW]], %[[SW]] {promotion_interval = 128 : i64, transpose_b} : {{.*}} -> tensor<192x256xf32>
// DEFAULT: %[[TDY:.*]], %[[TSDY:.*]] = dsv3.fp8_quantize %{{.*}} {tile = array<i64: 128, 1>} : (tensor<192x320xf32>) -> (tensor<192x320xf8E4M3FN>, tensor<2x320xf32>)
// DEFAULT: %[[TX:.*]], %[[TSX:.*]] = dsv3.fp8_quantize %[[X2]] {tile = array<i64: 128, 1>} : (tensor<192x256xf32>) -> (tensor<192x256xf8E4M3FN>, tensor<2x256xf32>)
// DEFAULT: dsv3.fp8_gemm %[[TDY]], %[[TSDY]], %[[TX]], %[[TSX]] {promotion_interval = 128 : i64, transpose_a, transpose_b} : {{.*}} -> tensor<320x256xf32>
// DEFAULT-NOT: dsv3.linear

// format=e5m2 with power-of-two scales applies to every quantization of
// every function (no E4M3 code anywhere).
// E5M2-LABEL: func.func @layer
// E5M2-COUNT-5: dsv3.fp8_quantize {{.*}} {power_of_two_scales, tile = {{.*}}xf8E5M2>
// E5M2-LABEL: func.func @shared_activation
// E5M2-COUNT-3: dsv3.fp8_quantize {{.*}} {power_of_two_scales, tile = {{.*}}xf8E5M2>
// E5M2-LABEL: func.func @experts
// E5M2-COUNT-5: dsv3.fp8_quantize {{.*}} {power_of_two_scales, tile = {{.*}}xf8E5M2>
// E5M2-LABEL: func.func @dynamic_offsets

// FP8 activation caching: the weight gradient re-quantizes the forward's
// FP8 copy of x instead of x itself.
// CACHE: %[[QX:.*]], %[[SX:.*]] = dsv3.fp8_quantize %[[X2:.*]] {tile = array<i64: 1, 128>}
// CACHE: %[[XC:.*]] = dsv3.fp8_dequantize %[[QX]], %[[SX]] {tile = array<i64: 1, 128>}
// CACHE: dsv3.fp8_quantize %[[XC]] {tile = array<i64: 128, 1>}

// gemms=fprop: inference; both gradients stay float32.
// FPROP: dsv3.fp8_gemm
// FPROP: dsv3.linear_grad_input
// FPROP: dsv3.linear_grad_weight

// A layer named in high-precision keeps all three GEMMs in float32.
// HIGH-LABEL: func.func @layer
// HIGH-NOT: dsv3.fp8
// HIGH: return
func.func @layer(%x: tensor<2x96x256xf32>, %dy: tensor<2x96x320xf32>) -> (tensor<2x96x320xf32>, tensor<2x96x256xf32>, tensor<320x256xf32>) {
  %w = dsv3.param "model.layers.0.self_attn.q_proj.weight" : tensor<320x256xf32>
  %y = dsv3.linear %x, %w : (tensor<2x96x256xf32>, tensor<320x256xf32>) -> tensor<2x96x320xf32>
  %dx = dsv3.linear_grad_input %dy, %w : (tensor<2x96x320xf32>, tensor<320x256xf32>) -> tensor<2x96x256xf32>
  %dw = dsv3.linear_grad_weight %dy, %x {param = "model.layers.0.self_attn.q_proj.weight"} : (tensor<2x96x320xf32>, tensor<2x96x256xf32>) -> tensor<320x256xf32>
  return %y, %dx, %dw : tensor<2x96x320xf32>, tensor<2x96x256xf32>, tensor<320x256xf32>
}

// -----

// Defaults keep the embedding-side and routing GEMMs in float32, by role
// (not by name): the output head, the MTP projection, the router, and
// weights that are not parameters.
// CHECK-LABEL: func.func @high_precision_by_default
// CHECK-NOT: dsv3.fp8
// CHECK: return
func.func @high_precision_by_default(%x: tensor<4x256xf32>, %w: tensor<8x256xf32>) -> (tensor<4x512xf32>, tensor<4x256xf32>, tensor<4x16xf32>, tensor<4x8xf32>) {
  %head = dsv3.param "out" role <head> : tensor<512x256xf32>
  %eh = dsv3.param "model.layers.2.eh_proj.weight" role <mtp_projection> : tensor<256x256xf32>
  %router = dsv3.param "model.layers.1.mlp.gate.weight" role <router> : tensor<16x256xf32>
  %a = dsv3.linear %x, %head : (tensor<4x256xf32>, tensor<512x256xf32>) -> tensor<4x512xf32>
  %b = dsv3.linear %x, %eh : (tensor<4x256xf32>, tensor<256x256xf32>) -> tensor<4x256xf32>
  %c = dsv3.linear %x, %router : (tensor<4x256xf32>, tensor<16x256xf32>) -> tensor<4x16xf32>
  %d = dsv3.linear %x, %w : (tensor<4x256xf32>, tensor<8x256xf32>) -> tensor<4x8xf32>
  return %a, %b, %c, %d : tensor<4x512xf32>, tensor<4x256xf32>, tensor<4x16xf32>, tensor<4x8xf32>
}

// -----

// Layers reading the same activation share its quantization (gate and up).
// CHECK-LABEL: func.func @shared_activation
// CHECK-COUNT-1: dsv3.fp8_quantize %arg0 {tile = array<i64: 1, 128>}
// CHECK-NOT: dsv3.fp8_quantize %arg0 {tile = array<i64: 1, 128>}
func.func @shared_activation(%x: tensor<8x128xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  %g = dsv3.param "model.layers.0.mlp.gate_proj.weight" : tensor<64x128xf32>
  %u = dsv3.param "model.layers.0.mlp.up_proj.weight" : tensor<64x128xf32>
  %a = dsv3.linear %x, %g : (tensor<8x128xf32>, tensor<64x128xf32>) -> tensor<8x64xf32>
  %b = dsv3.linear %x, %u : (tensor<8x128xf32>, tensor<64x128xf32>) -> tensor<8x64xf32>
  return %a, %b : tensor<8x64xf32>, tensor<8x64xf32>
}

// -----

// Routed experts: the same three GEMMs per expert. Each expert's weight is
// quantized in its own 128x128 blocks (scales [E, N/128, K/128]); the
// weight gradient tiles tokens 128x1 restarting at each expert's first row
// (ceil(R/128) + E scale rows).
// CHECK-LABEL: func.func @experts
// DEFAULT: %[[QX:.*]], %[[SX:.*]] = dsv3.fp8_quantize %arg0 {tile = array<i64: 1, 128>} : (tensor<256x192xf32>) -> (tensor<256x192xf8E4M3FN>, tensor<256x2xf32>)
// DEFAULT: %[[QW:.*]], %[[SW:.*]] = dsv3.fp8_quantize %[[W:.*]] {tile = array<i64: 128, 128>} : (tensor<4x32x192xf32>) -> (tensor<4x32x192xf8E4M3FN>, tensor<4x1x2xf32>)
// DEFAULT: dsv3.fp8_m_grouped_gemm %[[QX]], %[[SX]], %[[QW]], %[[SW]], %arg2 {promotion_interval = 128 : i64} : {{.*}} -> tensor<256x32xf32>
// DEFAULT: %[[QDY:.*]], %[[SDY:.*]] = dsv3.fp8_quantize %arg1 {tile = array<i64: 1, 128>} : (tensor<256x32xf32>) -> (tensor<256x32xf8E4M3FN>, tensor<256x1xf32>)
// DEFAULT: dsv3.fp8_m_grouped_gemm %[[QDY]], %[[SDY]], %[[QW]], %[[SW]], %arg2 {promotion_interval = 128 : i64, transpose_b} : {{.*}} -> tensor<256x192xf32>
// DEFAULT: %[[TDY:.*]], %[[TSDY:.*]] = dsv3.fp8_quantize %arg1 groups %arg2 {tile = array<i64: 128, 1>} : (tensor<256x32xf32>, tensor<5xi64>) -> (tensor<256x32xf8E4M3FN>, tensor<6x32xf32>)
// DEFAULT: %[[TX:.*]], %[[TSX:.*]] = dsv3.fp8_quantize %arg0 groups %arg2 {tile = array<i64: 128, 1>} : (tensor<256x192xf32>, tensor<5xi64>) -> (tensor<256x192xf8E4M3FN>, tensor<6x192xf32>)
// DEFAULT: dsv3.fp8_k_grouped_gemm %[[TDY]], %[[TSDY]], %[[TX]], %[[TSX]], %arg2 {promotion_interval = 128 : i64} : {{.*}} -> tensor<4x32x192xf32>
// DEFAULT-NOT: dsv3.grouped_linear

// CACHE-LABEL: func.func @experts
// CACHE: %[[QX:.*]], %[[SX:.*]] = dsv3.fp8_quantize %arg0 {tile = array<i64: 1, 128>}
// CACHE: %[[XC:.*]] = dsv3.fp8_dequantize %[[QX]], %[[SX]] {tile = array<i64: 1, 128>}
// CACHE: dsv3.fp8_quantize %[[XC]] groups %arg2 {tile = array<i64: 128, 1>}

// FPROP-LABEL: func.func @experts
// FPROP: dsv3.fp8_m_grouped_gemm
// FPROP: dsv3.grouped_linear_grad_input
// FPROP: dsv3.grouped_linear_grad_weight

// HIGH-LABEL: func.func @experts
// HIGH: dsv3.fp8_m_grouped_gemm
func.func @experts(%x: tensor<256x192xf32>, %dy: tensor<256x32xf32>, %offsets: tensor<5xi64>) -> (tensor<256x32xf32>, tensor<256x192xf32>, tensor<4x32x192xf32>) {
  %w = dsv3.param "model.layers.1.mlp.experts.*.gate_proj.weight" stack 4 : tensor<4x32x192xf32>
  %y = dsv3.grouped_linear %x, %w, %offsets : (tensor<256x192xf32>, tensor<4x32x192xf32>, tensor<5xi64>) -> tensor<256x32xf32>
  %dx = dsv3.grouped_linear_grad_input %dy, %w, %offsets : (tensor<256x32xf32>, tensor<4x32x192xf32>, tensor<5xi64>) -> tensor<256x192xf32>
  %dw = dsv3.grouped_linear_grad_weight %dy, %x, %offsets {num_experts = 4 : i64, param = "model.layers.1.mlp.experts.*.gate_proj.weight"} : (tensor<256x32xf32>, tensor<256x192xf32>, tensor<5xi64>) -> tensor<4x32x192xf32>
  return %y, %dx, %dw : tensor<256x32xf32>, tensor<256x192xf32>, tensor<4x32x192xf32>
}

// -----

// Dynamic shapes have no static tiling: such GEMMs stay float32.
// CHECK-LABEL: func.func @dynamic_offsets
// CHECK-NOT: dsv3.fp8
// CHECK: dsv3.grouped_linear_grad_weight
func.func @dynamic_offsets(%x: tensor<256x192xf32>, %dy: tensor<256x32xf32>, %offsets: tensor<?xi64>) -> tensor<4x32x192xf32> {
  %dw = dsv3.grouped_linear_grad_weight %dy, %x, %offsets {num_experts = 4 : i64, param = "model.layers.1.mlp.experts.*.gate_proj.weight"} : (tensor<256x32xf32>, tensor<256x192xf32>, tensor<?xi64>) -> tensor<4x32x192xf32>
  return %dw : tensor<4x32x192xf32>
}

// -----

// The policy keys on roles, not names: a weight named like the output head
// but used as an attention projection runs in FP8, one named like q_proj but
// acting as a router stays float32, and so does its weight gradient, which
// names the parameter.
// CHECK-LABEL: func.func @roles_not_names
// CHECK: dsv3.fp8_gemm
// CHECK-NOT: dsv3.fp8_gemm
// CHECK: dsv3.linear %{{.*}}, %[[R:.*]] :
// CHECK: dsv3.linear_grad_weight {{.*}}q_proj
// high-precision-roles replaces the default set: attention stays float32,
// the router now runs in FP8.
// ROLES-LABEL: func.func @roles_not_names
// ROLES: dsv3.linear %{{.*}}, %{{.*}} :
// ROLES: dsv3.fp8_gemm
func.func @roles_not_names(%x: tensor<4x256xf32>, %dy: tensor<4x128xf32>) -> (tensor<4x128xf32>, tensor<4x128xf32>, tensor<128x256xf32>) {
  %a = dsv3.param "lm_head.weight" role <attention> : tensor<128x256xf32>
  %r = dsv3.param "model.layers.0.self_attn.q_proj.weight" role <router> : tensor<128x256xf32>
  %y1 = dsv3.linear %x, %a : (tensor<4x256xf32>, tensor<128x256xf32>) -> tensor<4x128xf32>
  %y2 = dsv3.linear %x, %r : (tensor<4x256xf32>, tensor<128x256xf32>) -> tensor<4x128xf32>
  %dw = dsv3.linear_grad_weight %dy, %x {param = "model.layers.0.self_attn.q_proj.weight"} : (tensor<4x128xf32>, tensor<4x256xf32>) -> tensor<128x256xf32>
  return %y1, %y2, %dw : tensor<4x128xf32>, tensor<4x128xf32>, tensor<128x256xf32>
}
