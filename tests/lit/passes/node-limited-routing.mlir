// RUN: dsv3-opt %s --dsv3-node-limited-routing="nodes=2 max-nodes=1" | FileCheck %s
// RUN: dsv3-opt %s --dsv3-node-limited-routing="nodes=2 max-nodes=2" | FileCheck %s --check-prefix=FREE
// RUN: dsv3-opt %s --dsv3-node-limited-routing="nodes=2 max-nodes=1" --convert-dsv3-to-linalg | FileCheck %s --check-prefix=LOWER

// dsv3-node-limited-routing marks each router with the plan's nodes; a
// limit of every node is no limit. The lowering scores the nodes before
// the groups: one more per-token loop over the 2 nodes.

// CHECK-LABEL: func.func @route
// CHECK: dsv3.moe_router {{.*}}max_nodes = 1 : i64{{.*}}nodes = 2 : i64
// FREE-LABEL: func.func @route
// FREE-NOT: nodes =
// LOWER-LABEL: func.func @route
// LOWER-NOT: dsv3.moe_router
// LOWER: scf.for {{.*}} to %c2{{.*}}iter_args
func.func @route(%x: tensor<4x8xf32>, %r: tensor<8x8xf32>, %b: tensor<8xf32>) -> tensor<4x2xi64> {
  %w, %i = dsv3.moe_router %x, %r, %b {top_k = 2 : i64, n_group = 2 : i64, topk_group = 1 : i64, norm_topk_prob = true, routed_scaling_factor = 1.0 : f64}
      : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> (tensor<4x2xf32>, tensor<4x2xi64>)
  return %i : tensor<4x2xi64>
}
