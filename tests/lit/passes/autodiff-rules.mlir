// RUN: dsv3-opt %s -dsv3-autodiff=objective=l -split-input-file | FileCheck %s
// One case per gradient rule: which B and W ops each forward op produces.

// RMSNorm: input gradient and weight gradient from the same operands.
// CHECK-LABEL: func.func @forward_grad
// CHECK: %[[G:.*]] = dsv3.cross_entropy_grad
// CHECK: dsv3.rms_norm_grad_input %{{.*}}, %{{.*}}, %[[G]] {epsilon =
// CHECK: dsv3.rms_norm_grad_weight %{{.*}}, %[[G]] {epsilon =
func.func @forward(%lab: tensor<1x3xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %x = dsv3.param "x" : tensor<1x3x4xf32>
  %w = dsv3.param "w" : tensor<4xf32>
  %y = dsv3.rms_norm %x, %w {epsilon = 1.0e-06 : f64} : (tensor<1x3x4xf32>, tensor<4xf32>) -> tensor<1x3x4xf32>
  %l = dsv3.cross_entropy %y, %lab : (tensor<1x3x4xf32>, tensor<1x3xi64>) -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// SwiGLU: one op yields both operand gradients.
// CHECK-LABEL: func.func @forward_grad
// CHECK: %[[DG:.*]], %[[DU:.*]] = dsv3.swiglu_grad
// CHECK: return {{.*}}, %[[DG]], %[[DU]]
func.func @forward(%lab: tensor<1x3xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %g = dsv3.param "g" : tensor<1x3x4xf32>
  %u = dsv3.param "u" : tensor<1x3x4xf32>
  %y = dsv3.swiglu %g, %u : (tensor<1x3x4xf32>, tensor<1x3x4xf32>) -> tensor<1x3x4xf32>
  %l = dsv3.cross_entropy %y, %lab : (tensor<1x3x4xf32>, tensor<1x3xi64>) -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// The attention core: five gradients, segments carried over.
// CHECK-LABEL: func.func @forward_grad
// CHECK: dsv3.mla_core_grad {{.*}} segments %{{.*}} {softmax_scale = 5.000000e-01 : f64}
func.func @forward(%lab: tensor<1x2xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %q = dsv3.param "q" : tensor<1x2x1x2xf32>
  %kr = dsv3.param "kr" : tensor<1x2x2xf32>
  %seg = arith.constant dense<[[0, 1]]> : tensor<1x2xi64>
  %o = dsv3.mla_core %q, %q, %q, %kr, %q segments %seg {softmax_scale = 0.5 : f64}
      : (tensor<1x2x1x2xf32>, tensor<1x2x1x2xf32>, tensor<1x2x1x2xf32>, tensor<1x2x2xf32>, tensor<1x2x1x2xf32>, tensor<1x2xi64>) -> tensor<1x2x1x2xf32>
  %y = tensor.collapse_shape %o [[0], [1], [2, 3]] : tensor<1x2x1x2xf32> into tensor<1x2x2xf32>
  %l = dsv3.cross_entropy %y, %lab : (tensor<1x2x2xf32>, tensor<1x2xi64>) -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// Routed experts: dispatch, grouped linears, combine. Each grouped linear's
// input gradient (B) is apart from its weight gradient (W); the dispatch's
// adjoint is an unweighted combine through the same row map.
// CHECK-LABEL: func.func @forward_grad
// CHECK: %[[ROWS:.*]], %[[ROS:.*]], %[[SOR:.*]], %[[OFF:.*]] = dsv3.moe_dispatch
// CHECK: %[[H:.*]] = dsv3.grouped_linear %[[ROWS]], %[[G:.*]], %[[OFF]]
// CHECK: %[[Y:.*]] = dsv3.moe_combine %[[H]], %[[W:.*]], %[[ROS]]
// CHECK: %[[DR:.*]], %[[DW:.*]] = dsv3.moe_combine_grad %[[H]], %[[W]], %[[ROS]], %[[SOR]], %{{.*}} :
// CHECK-DAG: %[[DX:.*]] = dsv3.grouped_linear_grad_input %[[DR]], %[[G]], %[[OFF]]
// CHECK-DAG: %[[DG:.*]] = dsv3.grouped_linear_grad_weight %[[DR]], %[[ROWS]], %[[OFF]] {num_experts = 2 : i64, param = "e.*.g"} : (tensor<2x3xf32>, tensor<2x4xf32>, tensor<3xi64>) -> tensor<2x3x4xf32>
// CHECK: %[[ONES:.*]] = arith.constant dense<1.000000e+00> : tensor<2x1xf32>
// CHECK: dsv3.moe_combine %[[DX]], %[[ONES]], %[[ROS]]
// CHECK: return {{.*}}, %[[DG]]
func.func @forward(%lab: tensor<1x2xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %x = dsv3.param "x" : tensor<2x4xf32>
  %w = dsv3.param "w" : tensor<2x1xf32>
  %ids = arith.constant dense<[[0], [1]]> : tensor<2x1xi64>
  %g = dsv3.param "e.*.g" stack 2 : tensor<2x3x4xf32>
  %rows, %ros, %sor, %off = dsv3.moe_dispatch %x, %ids {num_experts = 2 : i64}
      : (tensor<2x4xf32>, tensor<2x1xi64>) -> (tensor<2x4xf32>, tensor<2x1xi64>, tensor<2xi64>, tensor<3xi64>)
  %h = dsv3.grouped_linear %rows, %g, %off : (tensor<2x4xf32>, tensor<2x3x4xf32>, tensor<3xi64>) -> tensor<2x3xf32>
  %y = dsv3.moe_combine %h, %w, %ros : (tensor<2x3xf32>, tensor<2x1xf32>, tensor<2x1xi64>) -> tensor<2x3xf32>
  %y3 = tensor.expand_shape %y [[0, 1], [2]] output_shape [1, 2, 3] : tensor<2x3xf32> into tensor<1x2x3xf32>
  %l = dsv3.cross_entropy %y3, %lab : (tensor<1x2x3xf32>, tensor<1x2xi64>) -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// Embedding: the table gradient is a scatter of the output gradient (W).
// CHECK-LABEL: func.func @forward_grad
// CHECK: %[[DT:.*]] = dsv3.embedding_grad %{{.*}}, %{{.*}} : (tensor<1x2xi64>, tensor<1x2x3xf32>) -> tensor<5x3xf32>
// CHECK: return {{.*}}, %[[DT]]
func.func @forward(%ids: tensor<1x2xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %t = dsv3.param "table" : tensor<5x3xf32>
  %e = dsv3.embedding %ids, %t : tensor<1x2xi64>, tensor<5x3xf32> -> tensor<1x2x3xf32>
  %l = dsv3.cross_entropy %e, %ids : (tensor<1x2x3xf32>, tensor<1x2xi64>) -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// The balance loss differentiates into the router logits only.
// CHECK-LABEL: func.func @forward_grad
// CHECK: dsv3.moe_balance_loss_grad {{.*}} {alpha = 1.000000e-01 : f64}
func.func @forward(%lab: tensor<1x2xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %lg = dsv3.param "logits" : tensor<1x2x2xf32>
  %ids = arith.constant dense<[[1], [1]]> : tensor<2x1xi64>
  %l = dsv3.moe_balance_loss %lg, %ids {alpha = 0.1 : f64} : (tensor<1x2x2xf32>, tensor<2x1xi64>) -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// Communication: all-gather's backward is a reduce-scatter, all-to-all's
// the reverse exchange (counts swapped, back into the sent shape), and
// all-reduce its own.
// CHECK-LABEL: func.func @forward_grad
// CHECK-SAME: (%[[LAB:.*]]: tensor<1x8xi64>, %[[SC:.*]]: tensor<2xi64>, %[[RC:.*]]: tensor<2xi64>)
// CHECK: %[[G1:.*]] = dsv3.cross_entropy_grad
// CHECK: %[[G2:.*]] = dsv3.all_to_all %[[G1C:.*]], %[[RC]], %[[SC]] {ranks = 2 : i64} : (tensor<8x4xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<6x4xf32>
// CHECK: %[[G3:.*]] = dsv3.reduce_scatter %[[G2]] {ranks = 2 : i64} : tensor<6x4xf32> -> tensor<3x4xf32>
// CHECK: %[[G4:.*]] = dsv3.all_reduce %[[G3]] {ranks = 2 : i64} : tensor<3x4xf32> -> tensor<3x4xf32>
// CHECK: return {{.*}}, %[[G4]]
func.func @forward(%lab: tensor<1x8xi64>, %sc: tensor<2xi64>, %rc: tensor<2xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %w = dsv3.param "w" : tensor<3x4xf32>
  %r = dsv3.all_reduce %w {ranks = 2 : i64} : tensor<3x4xf32> -> tensor<3x4xf32>
  %g = dsv3.all_gather %r {ranks = 2 : i64} : tensor<3x4xf32> -> tensor<6x4xf32>
  %x = dsv3.all_to_all %g, %sc, %rc {ranks = 2 : i64}
      : (tensor<6x4xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<8x4xf32>
  %y = tensor.expand_shape %x [[0, 1], [2]] output_shape [1, 8, 4] : tensor<8x4xf32> into tensor<1x8x4xf32>
  %l = dsv3.cross_entropy %y, %lab : (tensor<1x8x4xf32>, tensor<1x8xi64>) -> tensor<f32>
  return %l : tensor<f32>
}
