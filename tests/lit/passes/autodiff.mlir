// RUN: dsv3-opt %s -dsv3-autodiff=objective=l -split-input-file -verify-diagnostics \
// RUN:   | FileCheck %s --implicit-check-not='func.func @forward('

// A linear layer: separate input-gradient (B) and weight-gradient (W) ops;
// the weight's gradient is named after the parameter.
// CHECK-LABEL: func.func @forward_grad(
// CHECK-SAME: {dsv3.output = "l"}
// CHECK-SAME: {dsv3.output = "grad.w", dsv3.output_param = "w", dsv3.output_role = #dsv3.output_role<gradient>}
func.func @forward(%x: tensor<2x3x8xf32>, %lab: tensor<2x3xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %w = dsv3.param "w" : tensor<5x8xf32>
  %y = dsv3.linear %x, %w : (tensor<2x3x8xf32>, tensor<5x8xf32>) -> tensor<2x3x5xf32>
  %l = dsv3.cross_entropy %y, %lab : (tensor<2x3x5xf32>, tensor<2x3xi64>) -> tensor<f32>
  // CHECK: %[[Y:.*]] = dsv3.linear
  // CHECK: %[[L:.*]] = dsv3.cross_entropy
  // CHECK: %[[ONE:.*]] = arith.constant dense<1.000000e+00> : tensor<f32>
  // CHECK: %[[DY:.*]] = dsv3.cross_entropy_grad %[[Y]], %{{.*}}, %[[ONE]]
  // CHECK: dsv3.linear_grad_input %[[DY]]
  // CHECK: %[[DW:.*]] = dsv3.linear_grad_weight %[[DY]]
  // CHECK: return %[[L]], %[[DW]]
  return %l : tensor<f32>
}

// -----

// A parameter used twice gets one summed gradient; RoPE's gradient is the
// transposed rotation; the router differentiates through the gate weights
// only, and the routing bias gets no gradient.
// CHECK-LABEL: func.func @forward_grad
func.func @forward(%x: tensor<1x2x1x2xf32>, %t: tensor<2x4xf32>, %lab: tensor<1x2xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %pos = dsv3.positions {offset = 0 : i64} : tensor<1x2xi64>
  %r = dsv3.rope %x, %pos {inv_freq = array<f64: 1.0>, attention_scaling = 1.0 : f64} : (tensor<1x2x1x2xf32>, tensor<1x2xi64>) -> tensor<1x2x1x2xf32>
  %router = dsv3.param "router" : tensor<4x4xf32>
  %bias = dsv3.param "bias" : tensor<4xf32>
  %w, %ids = dsv3.moe_router %t, %router, %bias {top_k = 2 : i64, n_group = 1 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<2x4xf32>, tensor<4x4xf32>, tensor<4xf32>) -> (tensor<2x2xf32>, tensor<2x2xi64>)
  %w3 = tensor.expand_shape %w [[0, 1], [2]] output_shape [1, 2, 2] : tensor<2x2xf32> into tensor<1x2x2xf32>
  %rr = tensor.collapse_shape %r [[0], [1], [2, 3]] : tensor<1x2x1x2xf32> into tensor<1x2x2xf32>
  %s = arith.addf %w3, %rr : tensor<1x2x2xf32>
  %s2 = arith.addf %s, %rr : tensor<1x2x2xf32>
  %l = dsv3.cross_entropy %s2, %lab : (tensor<1x2x2xf32>, tensor<1x2xi64>) -> tensor<f32>
  // CHECK: %[[S:.*]] = arith.addf %{{.*}}, %[[RR:.*]] : tensor<1x2x2xf32>
  // CHECK: %[[S2:.*]] = arith.addf %[[S]], %[[RR]] : tensor<1x2x2xf32>
  // CHECK: %[[L:.*]] = dsv3.cross_entropy %[[S2]]
  // CHECK: %[[DS2:.*]] = dsv3.cross_entropy_grad %[[S2]]
  // CHECK: %[[DRR:.*]] = arith.addf %[[DS2]], %[[DS2]] : tensor<1x2x2xf32>
  // CHECK: %[[DR:.*]] = tensor.expand_shape %[[DRR]]
  // CHECK: dsv3.moe_router_grad
  // CHECK: %[[DROUTER:.*]] = dsv3.linear_grad_weight {{.*}} {param = "router"}
  // CHECK: dsv3.rope %[[DR]], {{.*}} transpose
  // CHECK: return %[[L]], %[[DROUTER]] : tensor<f32>, tensor<4x4xf32>{{$}}
  return %l : tensor<f32>
}

// -----

// An op without a gradient rule on the path to the objective is an error.
func.func @forward(%x: tensor<2x3x8xf32>, %lab: tensor<2x3xi64>) -> (tensor<f32> {dsv3.output = "l"}) {
  %e = math.exp %x : tensor<2x3x8xf32>
  %l = dsv3.cross_entropy %e, %lab : (tensor<2x3x8xf32>, tensor<2x3xi64>) -> tensor<f32>
  // expected-error @-2 {{'math.exp' op has no gradient rule}}
  return %l : tensor<f32>
}

// The checks above reject the faults they describe: a product instead of a
// summed gradient, a gradient returned for the routing bias, the forward
// function left in place.
// RUN: dsv3-opt %s -dsv3-autodiff=objective=l -split-input-file -verify-diagnostics \
// RUN:   | sed 's/arith.addf %7, %7/arith.mulf %7, %7/' \
// RUN:   | not FileCheck %s --implicit-check-not='func.func @forward('
// RUN: dsv3-opt %s -dsv3-autodiff=objective=l -split-input-file -verify-diagnostics \
// RUN:   | sed 's/return %6, %12 : tensor<f32>, tensor<4x4xf32>/return %6, %12, %3 : tensor<f32>, tensor<4x4xf32>, tensor<4xf32>/' \
// RUN:   | not FileCheck %s --implicit-check-not='func.func @forward('
// RUN: dsv3-opt %s -dsv3-autodiff=objective=l -split-input-file -verify-diagnostics \
// RUN:   | sed 's/^module {$/module {\n  func.func @forward(%a: i1) {\n    return\n  }/' \
// RUN:   | not FileCheck %s --implicit-check-not='func.func @forward('
