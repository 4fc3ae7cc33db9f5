// RUN: dsv3-opt %s -convert-dsv3-to-linalg -split-input-file | FileCheck %s

// A linear over [B,T,K] collapses to a 2-D GEMM generic tagged for the
// microkernel and expands back.
// CHECK-LABEL: func.func @linear
func.func @linear(%x: tensor<2x3x8xf32>, %w: tensor<5x8xf32>) -> tensor<2x3x5xf32> {
  // CHECK: %[[X:.*]] = tensor.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : tensor<2x3x8xf32> into tensor<6x8xf32>
  // CHECK: %[[Z:.*]] = linalg.fill {{.*}} -> tensor<6x5xf32>
  // CHECK: %[[Y:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} ins(%[[X]], %{{.*}} : tensor<6x8xf32>, tensor<5x8xf32>) outs(%[[Z]] : tensor<6x5xf32>) attrs =  {dsv3.matmul_nt}
  // CHECK: arith.mulf
  // CHECK: arith.addf
  // CHECK: tensor.expand_shape %[[Y]]
  %y = dsv3.linear %x, %w : (tensor<2x3x8xf32>, tensor<5x8xf32>) -> tensor<2x3x5xf32>
  return %y : tensor<2x3x5xf32>
}

// -----

// RMSNorm: a sum-of-squares reduction, the per-row rsqrt scale, then the
// scaling generic.
// CHECK-LABEL: func.func @rms_norm
func.func @rms_norm(%x: tensor<4x8xf32>, %w: tensor<8xf32>) -> tensor<4x8xf32> {
  // CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
  // CHECK: arith.divf
  // CHECK: math.rsqrt
  // CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]
  %y = dsv3.rms_norm %x, %w {epsilon = 1.0e-06 : f64} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// The router: GEMM for logits, sigmoid and biased scores, top-2 group sums,
// then per-token selection loops.
// CHECK-LABEL: func.func @router
func.func @router(%x: tensor<3x8xf32>, %r: tensor<4x8xf32>, %b: tensor<4xf32>) -> (tensor<3x2xf32>, tensor<3x2xi64>) {
  // CHECK-DAG: arith.constant 2.500000e+00 : f32
  // CHECK: linalg.generic {{.*}}dsv3.matmul_nt
  // CHECK: math.exp
  // CHECK: tensor.expand_shape {{.*}} into tensor<3x2x2xf32>
  // CHECK: scf.for
  // CHECK: scf.for
  // CHECK: tensor.insert
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 2 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 2.5 : f64}
      : (tensor<3x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> (tensor<3x2xf32>, tensor<3x2xi64>)
  return %w, %i : tensor<3x2xf32>, tensor<3x2xi64>
}

// -----

// The attention core is the attention kernel; without segment ids every
// position is in document 0.
// CHECK-LABEL: func.func @mla_core
func.func @mla_core(%q: tensor<1x4x2x3xf32>, %qr: tensor<1x4x2x2xf32>, %kr: tensor<1x4x2xf32>) -> tensor<1x4x2x3xf32> {
  // CHECK-DAG: %[[SCALE:.*]] = arith.constant 5.000000e-01 : f64
  // CHECK-DAG: %[[ZERO:.*]] = arith.constant 0 : i64
  // CHECK: %[[SEG:.*]] = linalg.fill ins(%[[ZERO]] : i64) outs(%{{.*}} : tensor<1x4xi64>)
  // CHECK: dsv3.ukernel "dsv3rt_mla_attention" ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[SEG]], %[[SCALE]] : {{.*}}, tensor<1x4xi64>, f64) outs(%{{.*}} : tensor<1x4x2x3xf32>)
  %o = dsv3.mla_core %q, %qr, %q, %kr, %q {softmax_scale = 0.5 : f64}
      : (tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>) -> tensor<1x4x2x3xf32>
  return %o : tensor<1x4x2x3xf32>
}
