// RUN: dsv3-opt %s -convert-dsv3-to-linalg -split-input-file | FileCheck %s

// A linear over [B,T,K] collapses to a 2-D GEMM generic (no tag: a target
// recognises the structure) and expands back.
// CHECK-LABEL: func.func @linear
func.func @linear(%x: tensor<2x3x8xf32>, %w: tensor<5x8xf32>) -> tensor<2x3x5xf32> {
  // CHECK: %[[X:.*]] = tensor.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : tensor<2x3x8xf32> into tensor<6x8xf32>
  // CHECK: %[[Z:.*]] = linalg.fill {{.*}} -> tensor<6x5xf32>
  // CHECK: %[[Y:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} ins(%[[X]], %{{.*}} : tensor<6x8xf32>, tensor<5x8xf32>) outs(%[[Z]] : tensor<6x5xf32>) {
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
  // CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} ins(%{{.*}}, %{{.*}} : tensor<3x8xf32>, tensor<4x8xf32>)
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

// The attention core's reference: scores over a materialised [B,H,Tq,Tk]
// tensor (the nope part, then the shared rope key), the mask (query i at
// position prefix + i = i + 2 sees keys u <= i + 2 of its own segment), the
// row max, exp, the row sum, normalisation and the product with V.
// CHECK-LABEL: func.func @mla_core_prefix
func.func @mla_core_prefix(%q: tensor<1x2x2x3xf32>, %qr: tensor<1x2x2x2xf32>, %k: tensor<1x4x2x3xf32>, %kr: tensor<1x4x2xf32>, %seg: tensor<1x4xi64>) -> tensor<1x2x2x3xf32> {
  // CHECK-DAG: %[[NEGINF:.*]] = arith.constant 0xFF800000 : f32
  // CHECK-DAG: %[[PREFIX:.*]] = arith.constant 2 : index
  // CHECK: %[[NOPE:.*]] = linalg.generic {{.*}} ins(%arg0, %arg2 : tensor<1x2x2x3xf32>, tensor<1x4x2x3xf32>) outs(%{{.*}} : tensor<1x2x2x4xf32>)
  // CHECK: %[[S:.*]] = linalg.generic {{.*}} ins(%arg1, %arg3 : tensor<1x2x2x2xf32>, tensor<1x4x2xf32>) outs(%[[NOPE]] : tensor<1x2x2x4xf32>)
  // CHECK: linalg.generic {{.*}} ins(%[[S]] : tensor<1x2x2x4xf32>)
  // CHECK: %[[T:.*]] = arith.addi %{{.*}}, %[[PREFIX]] : index
  // CHECK: %[[U:.*]] = linalg.index 3
  // CHECK: %[[CAUSAL:.*]] = arith.cmpi ule, %[[U]], %[[T]]
  // CHECK: %[[SU:.*]] = tensor.extract %arg4[%{{.*}}, %[[U]]]
  // CHECK: %[[ST:.*]] = tensor.extract %arg4[%{{.*}}, %[[T]]]
  // CHECK: %[[SAME:.*]] = arith.cmpi eq, %[[SU]], %[[ST]]
  // CHECK: %[[OK:.*]] = arith.andi %[[CAUSAL]], %[[SAME]]
  // CHECK: arith.select %[[OK]], %{{.*}}, %[[NEGINF]]
  // CHECK: arith.maximumf
  // CHECK: math.exp
  // CHECK: arith.addf
  // CHECK: arith.divf
  // CHECK: linalg.generic {{.*}} ins(%{{.*}}, %arg2 : tensor<1x2x2x4xf32>, tensor<1x4x2x3xf32>) outs(%{{.*}} : tensor<1x2x2x3xf32>)
  // CHECK-NOT: dsv3
  %o = dsv3.mla_core %q, %qr, %k, %kr, %k segments %seg {softmax_scale = 0.5 : f64}
      : (tensor<1x2x2x3xf32>, tensor<1x2x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4xi64>) -> tensor<1x2x2x3xf32>
  return %o : tensor<1x2x2x3xf32>
}

// -----

// The gradient recomputes the probabilities and returns five gradients; the
// shared rope key's sums over heads and queries (two reduction loops).
// CHECK-LABEL: func.func @mla_core_grad
// CHECK: math.exp
// CHECK: %[[DKR:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]{{.*}} outs(%{{.*}} : tensor<1x4x2xf32>)
// CHECK: return %{{.*}}, %{{.*}}, %{{.*}}, %[[DKR]], %{{.*}} :
// CHECK-NOT: dsv3
func.func @mla_core_grad(%q: tensor<1x4x2x3xf32>, %qr: tensor<1x4x2x2xf32>, %kr: tensor<1x4x2xf32>, %do: tensor<1x4x2x3xf32>) -> (tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>) {
  %dq, %dqr, %dk, %dkr, %dv = dsv3.mla_core_grad %q, %qr, %q, %kr, %q, %do {softmax_scale = 0.5 : f64}
      : (tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2x3xf32>)
      -> (tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>)
  return %dq, %dqr, %dk, %dkr, %dv : tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>
}

// -----

// Dispatch as reductions: offsets count the pairs below each expert, a
// pair's row adds the earlier pairs of its expert, slot_of_row inverts it;
// the grouped GEMM reads each row's expert weight with tensor.extract.
// CHECK-LABEL: func.func @experts
// CHECK: %[[OFF:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} outs(%{{.*}} : tensor<5xi64>)
// CHECK: arith.cmpi slt
// CHECK: %[[EARLIER:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} outs(%{{.*}} : tensor<6xi64>)
// CHECK: arith.cmpi ult
// CHECK: arith.cmpi eq
// CHECK: tensor.extract %[[OFF]]
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
// CHECK: tensor.expand_shape {{.*}} into tensor<3x2xi64>
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} outs(%{{.*}} : tensor<6x5xf32>)
// CHECK: tensor.extract %arg2
// CHECK-NOT: dsv3
func.func @experts(%x: tensor<3x8xf32>, %ids: tensor<3x2xi64>, %w: tensor<4x5x8xf32>) -> (tensor<6x5xf32>, tensor<3x2xi64>) {
  %rows, %ros, %sor, %off = dsv3.moe_dispatch %x, %ids {num_experts = 4 : i64}
      : (tensor<3x8xf32>, tensor<3x2xi64>) -> (tensor<6x8xf32>, tensor<3x2xi64>, tensor<6xi64>, tensor<5xi64>)
  %h = dsv3.grouped_linear %rows, %w, %off : (tensor<6x8xf32>, tensor<4x5x8xf32>, tensor<5xi64>) -> tensor<6x5xf32>
  return %h, %ros : tensor<6x5xf32>, tensor<3x2xi64>
}

// -----

// The absorbed core's reference: q̂ = W_UKᵀ q_nope, the keys as the cache
// (capacity 5) followed by the new rows, scores against the latent and rope
// parts, the mask (a cache key u is visible below positions[b, 0], a new
// row j = u - 5 up to the query), softmax, the attended latent, W_UV.
// CHECK-LABEL: func.func @mla_absorbed_core
// CHECK-DAG: %[[CAP:.*]] = arith.constant 5 : index
// CHECK: %[[QHAT:.*]] = linalg.generic {{.*}} ins(%arg0, %arg2 : tensor<2x2x2x3xf32>, tensor<2x3x4xf32>) outs(%{{.*}} : tensor<2x2x2x4xf32>)
// CHECK: %[[K1:.*]] = tensor.insert_slice %arg4 into %{{.*}}[0, 0, 0] [2, 5, 6] [1, 1, 1] : tensor<2x5x6xf32> into tensor<2x7x6xf32>
// CHECK: %[[K:.*]] = tensor.insert_slice %arg5 into %[[K1]][0, 5, 0] [2, 2, 6] [1, 1, 1] : tensor<2x2x6xf32> into tensor<2x7x6xf32>
// CHECK: %[[KL:.*]] = tensor.extract_slice %[[K]][0, 0, 0] [2, 7, 4] [1, 1, 1]
// CHECK: %[[KR:.*]] = tensor.extract_slice %[[K]][0, 0, 4] [2, 7, 2] [1, 1, 1]
// CHECK: %[[S1:.*]] = linalg.generic {{.*}} ins(%[[QHAT]], %[[KL]] : {{.*}}) outs(%{{.*}} : tensor<2x2x2x7xf32>)
// CHECK: %[[S:.*]] = linalg.generic {{.*}} ins(%arg1, %[[KR]] : {{.*}}) outs(%[[S1]] : tensor<2x2x2x7xf32>)
// CHECK: linalg.generic {{.*}} ins(%[[S]] : tensor<2x2x2x7xf32>)
// CHECK: %[[POS:.*]] = tensor.extract %arg6[%{{.*}}, %{{.*}}] : tensor<2x2xi64>
// CHECK: %[[PREFIX:.*]] = arith.index_cast %[[POS]] : i64 to index
// CHECK: %[[INCACHE:.*]] = arith.cmpi ult, %[[U:.*]], %[[CAP]]
// CHECK: %[[OLD:.*]] = arith.cmpi slt, %[[U]], %[[PREFIX]]
// CHECK: %[[J:.*]] = arith.subi %[[U]], %[[CAP]]
// CHECK: %[[NEW:.*]] = arith.cmpi ule, %[[J]], %{{.*}}
// CHECK: arith.select %[[INCACHE]], %[[OLD]], %[[NEW]]
// CHECK: math.exp
// CHECK: %[[ATT:.*]] = linalg.generic {{.*}} ins(%{{.*}}, %[[KL]] : tensor<2x2x2x7xf32>, tensor<2x7x4xf32>) outs(%{{.*}} : tensor<2x2x2x4xf32>)
// CHECK: linalg.generic {{.*}} ins(%[[ATT]], %arg3 : tensor<2x2x2x4xf32>, tensor<2x3x4xf32>) outs(%{{.*}} : tensor<2x2x2x3xf32>)
// CHECK-NOT: dsv3
func.func @mla_absorbed_core(%qn: tensor<2x2x2x3xf32>, %qr: tensor<2x2x2x2xf32>, %uk: tensor<2x3x4xf32>, %uv: tensor<2x3x4xf32>,
                             %cache: tensor<2x5x6xf32>, %rows: tensor<2x2x6xf32>, %p: tensor<2x2xi64>) -> tensor<2x2x2x3xf32> {
  %o = dsv3.mla_absorbed_core %qn, %qr, %uk, %uv, %cache, %rows, %p {softmax_scale = 0.5 : f64}
      : (tensor<2x2x2x3xf32>, tensor<2x2x2x2xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x5x6xf32>, tensor<2x2x6xf32>, tensor<2x2xi64>) -> tensor<2x2x2x3xf32>
  return %o : tensor<2x2x2x3xf32>
}

// -----

// A BF16 cache is widened to float32 before it joins the new rows.
// CHECK-LABEL: func.func @mla_absorbed_core_bf16
// CHECK: %[[WIDE:.*]] = linalg.generic {{.*}} ins(%arg4 : tensor<1x5x6xbf16>) outs(%{{.*}} : tensor<1x5x6xf32>)
// CHECK: arith.extf %{{.*}} : bf16 to f32
// CHECK: tensor.insert_slice %[[WIDE]] into %{{.*}}[0, 0, 0] [1, 5, 6] [1, 1, 1] : tensor<1x5x6xf32> into tensor<1x6x6xf32>
func.func @mla_absorbed_core_bf16(%qn: tensor<1x1x2x3xf32>, %qr: tensor<1x1x2x2xf32>, %uk: tensor<2x3x4xf32>, %uv: tensor<2x3x4xf32>,
                                  %cache: tensor<1x5x6xbf16>, %rows: tensor<1x1x6xf32>, %p: tensor<1x1xi64>) -> tensor<1x1x2x3xf32> {
  %o = dsv3.mla_absorbed_core %qn, %qr, %uk, %uv, %cache, %rows, %p {softmax_scale = 0.5 : f64}
      : (tensor<1x1x2x3xf32>, tensor<1x1x2x2xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<1x5x6xbf16>, tensor<1x1x6xf32>, tensor<1x1xi64>) -> tensor<1x1x2x3xf32>
  return %o : tensor<1x1x2x3xf32>
}
