// RUN: dsv3-opt %s --dsv3-expert-parallel=ranks=2 | FileCheck %s
// RUN: dsv3-opt %s --dsv3-expert-parallel=ranks=2 --dsv3-autodiff=objective=loss | FileCheck %s --check-prefix=GRAD
// RUN: dsv3-opt %s --dsv3-expert-parallel=ranks=1 | FileCheck %s --check-prefix=ONE
// RUN: not dsv3-opt %s --dsv3-expert-parallel=ranks=3 2>&1 | FileCheck %s --check-prefix=SPLIT

// The routed experts of one MoE layer (4 experts, top-2, 7 tokens) as
// dsv3-decompose emits them, sharded over 2 expert ranks: each rank
// dispatches its block of 4 tokens (the last padded: pad = 4, the group
// past every expert), exchanges counts then rows into the worst-case
// capacity 2 ranks x 4 tokens x min(top-2, 2 local experts) = 16, groups
// them by local expert (num_experts = 2 + 1), runs its 2 experts, and
// sends the results back before combining; an all-gather and a slice give
// every rank the 7 tokens.
// CHECK-LABEL: func.func @forward
// The experts' weights are this rank's blocks, where the whole stacks were
// read (the parameter order stays); no whole stack is left.
// CHECK-NOT: stack 4
// CHECK: dsv3.param "experts.*.gate" stack 2 role <expert> shard "expert" : tensor<2x8x16xf32>
// CHECK: dsv3.param "experts.*.up" stack 2 role <expert> shard "expert" : tensor<2x8x16xf32>
// CHECK: dsv3.param "experts.*.down" stack 2 role <expert> shard "expert" : tensor<2x16x8xf32>
// CHECK-NOT: stack 4
// CHECK: %[[X:.*]] = dsv3.rank_rows %arg0 {group = "expert", ranks = 2 : i64} : tensor<7x16xf32> -> tensor<4x16xf32>
// CHECK: %[[IDS:.*]] = dsv3.rank_rows %arg2 {group = "expert", pad = 4 : i64, ranks = 2 : i64} : tensor<7x2xi64> -> tensor<4x2xi64>
// CHECK: %[[W:.*]] = dsv3.rank_rows %arg1 {group = "expert", ranks = 2 : i64} : tensor<7x2xf32> -> tensor<4x2xf32>
// CHECK: %[[ROWS:.*]], %[[ROS:.*]], %{{.*}}, %[[OFF:.*]] = dsv3.moe_dispatch %[[X]], %[[IDS]] {num_experts = 5 : i64}
// CHECK: %[[SC:.*]], %[[EC:.*]] = dsv3.moe_send_counts %[[OFF]] {num_experts = 4 : i64, ranks = 2 : i64} : tensor<6xi64> -> (tensor<2xi64>, tensor<4xi64>)
// CHECK: %[[TWO:.*]] = arith.constant dense<2> : tensor<2xi64>
// CHECK: %[[REC:.*]] = dsv3.all_to_all %[[EC]], %[[TWO]], %[[TWO]] {group = "expert", ranks = 2 : i64} : (tensor<4xi64>, tensor<2xi64>, tensor<2xi64>) -> tensor<4xi64>
// CHECK: %[[RC:.*]], %[[LE:.*]] = dsv3.moe_recv_layout %[[REC]] {ranks = 2 : i64} : tensor<4xi64> -> (tensor<2xi64>, tensor<16x1xi64>)
// CHECK: %[[RECV:.*]] = dsv3.all_to_all %[[ROWS]], %[[SC]], %[[RC]] {group = "expert", ranks = 2 : i64} : (tensor<8x16xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<16x16xf32>
// CHECK: %[[G:.*]], %[[GROS:.*]], %{{.*}}, %[[GOFF:.*]] = dsv3.moe_dispatch %[[RECV]], %[[LE]] {num_experts = 3 : i64}
// CHECK: %[[LOFF:.*]] = tensor.extract_slice %[[GOFF]][0] [3] [1] : tensor<4xi64> to tensor<3xi64>
// CHECK: dsv3.grouped_linear %[[G]], %{{.*}}, %[[LOFF]] : (tensor<16x16xf32>, tensor<2x8x16xf32>, tensor<3xi64>) -> tensor<16x8xf32>
// CHECK: %[[OUT:.*]] = dsv3.grouped_linear %{{.*}}, %{{.*}}, %[[LOFF]] : (tensor<16x8xf32>, tensor<2x16x8xf32>, tensor<3xi64>) -> tensor<16x16xf32>
// CHECK: %[[BACK:.*]] = dsv3.moe_combine %[[OUT]], %{{.*}}, %[[GROS]] : (tensor<16x16xf32>, tensor<16x1xf32>, tensor<16x1xi64>) -> tensor<16x16xf32>
// CHECK: %[[RET:.*]] = dsv3.all_to_all %[[BACK]], %[[RC]], %[[SC]] {group = "expert", ranks = 2 : i64} : (tensor<16x16xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<8x16xf32>
// CHECK: %[[Y:.*]] = dsv3.moe_combine %[[RET]], %[[W]], %[[ROS]] : (tensor<8x16xf32>, tensor<4x2xf32>, tensor<4x2xi64>) -> tensor<4x16xf32>
// CHECK: %[[ALL:.*]] = dsv3.all_gather %[[Y]] {group = "expert", ranks = 2 : i64} : tensor<4x16xf32> -> tensor<8x16xf32>
// CHECK: %[[SLICE:.*]] = tensor.extract_slice %[[ALL]][0, 0] [7, 16] [1, 1] : tensor<8x16xf32> to tensor<7x16xf32>
// CHECK: return %[[SLICE]]

// The backward sends each row's gradient back the way the row came (counts
// swapped), reduce-scatters the all-gather's, and puts this rank's block in
// place.
// GRAD-LABEL: func.func @forward_grad
// GRAD: dsv3.reduce_scatter %{{.*}} {group = "expert", ranks = 2 : i64} : tensor<8x16xf32> -> tensor<4x16xf32>
// GRAD: dsv3.all_to_all %{{.*}}, %[[SC:.*]], %[[RC:.*]] {group = "expert", ranks = 2 : i64} : (tensor<8x16xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<16x16xf32>
// GRAD: dsv3.grouped_linear_grad_weight
// GRAD: dsv3.all_to_all %{{.*}}, %[[RC]], %[[SC]] {group = "expert", ranks = 2 : i64} : (tensor<16x16xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<8x16xf32>
// GRAD: dsv3.rank_rows_grad %{{.*}} {group = "expert", ranks = 2 : i64} : tensor<4x16xf32> -> tensor<7x16xf32>

// ONE-NOT: rank_rows
// ONE-NOT: all_to_all
// ONE: dsv3.param "experts.*.gate" stack 4

// SPLIT: dsv3-expert-parallel: 4 experts do not split over 3 ranks

func.func @forward(%x: tensor<7x16xf32>, %w: tensor<7x2xf32>, %ids: tensor<7x2xi64>,
                   %labels: tensor<1x7xi64>)
    -> (tensor<7x16xf32> {dsv3.output = "y"}, tensor<f32> {dsv3.output = "loss"}) {
  %gate = dsv3.param "experts.*.gate" stack 4 role <expert> : tensor<4x8x16xf32>
  %up = dsv3.param "experts.*.up" stack 4 role <expert> : tensor<4x8x16xf32>
  %down = dsv3.param "experts.*.down" stack 4 role <expert> : tensor<4x16x8xf32>
  %rows, %ros, %sor, %off = dsv3.moe_dispatch %x, %ids {num_experts = 4 : i64}
      : (tensor<7x16xf32>, tensor<7x2xi64>) -> (tensor<14x16xf32>, tensor<7x2xi64>, tensor<14xi64>, tensor<5xi64>)
  %g = dsv3.grouped_linear %rows, %gate, %off : (tensor<14x16xf32>, tensor<4x8x16xf32>, tensor<5xi64>) -> tensor<14x8xf32>
  %u = dsv3.grouped_linear %rows, %up, %off : (tensor<14x16xf32>, tensor<4x8x16xf32>, tensor<5xi64>) -> tensor<14x8xf32>
  %a = dsv3.swiglu %g, %u : (tensor<14x8xf32>, tensor<14x8xf32>) -> tensor<14x8xf32>
  %o = dsv3.grouped_linear %a, %down, %off : (tensor<14x8xf32>, tensor<4x16x8xf32>, tensor<5xi64>) -> tensor<14x16xf32>
  %y = dsv3.moe_combine %o, %w, %ros : (tensor<14x16xf32>, tensor<7x2xf32>, tensor<7x2xi64>) -> tensor<7x16xf32>
  %logits = tensor.expand_shape %y [[0, 1], [2]] output_shape [1, 7, 16] : tensor<7x16xf32> into tensor<1x7x16xf32>
  %loss = dsv3.cross_entropy %logits, %labels : (tensor<1x7x16xf32>, tensor<1x7xi64>) -> tensor<f32>
  return %y, %loss : tensor<7x16xf32>, tensor<f32>
}
