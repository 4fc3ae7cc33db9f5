// RUN: dsv3-opt %s --dsv3-lower-comm | FileCheck %s
// RUN: dsv3-opt %s --dsv3-lower-comm -cse -canonicalize | FileCheck %s --check-prefix=KEPT

// Collectives become calls of runtime/comm's entry points on [rows,
// columns] views, the group by number (expert = 2, world = 0); a started
// collective completes at its start and its wait hands the value on.
// The rank query is declared once, at the top.
// CHECK: func.func private @dsv3rt_comm_rank(i64) -> i64
// CHECK-LABEL: func.func @collectives
// CHECK: %[[G2:.*]] = arith.constant 2 : i64
// CHECK: %[[X2:.*]] = tensor.collapse_shape %arg0 {{\[\[}}0], [1, 2]] : tensor<6x2x3xf32> into tensor<6x6xf32>
// CHECK: %[[A:.*]] = dsv3_codegen.ukernel "dsv3rt_all_to_all_f32" ins(%[[G2]], %[[X2]], %arg1, %arg2 : i64, tensor<6x6xf32>, tensor<2xi64>, tensor<2xi64>) outs(%{{.*}} : tensor<12x6xf32>) {collective} -> tensor<12x6xf32>
// CHECK: tensor.expand_shape %[[A]] {{\[\[}}0], [1, 2]] output_shape [12, 2, 3] : tensor<12x6xf32> into tensor<12x2x3xf32>
// CHECK: %[[G0:.*]] = arith.constant 0 : i64
// CHECK: dsv3_codegen.ukernel "dsv3rt_all_reduce_i64" ins(%[[G0]], %{{.*}} : i64, tensor<4x1xi64>) outs(%{{.*}} : tensor<4x1xi64>) {collective}
// CHECK: dsv3_codegen.ukernel "dsv3rt_all_gather_f32" ins(%{{.*}}, %{{.*}} : i64, tensor<4x3xf32>) outs(%{{.*}} : tensor<8x3xf32>) {collective}
// CHECK-NOT: dsv3.wait
// CHECK-NOT: dsv3.all
func.func @collectives(%x: tensor<6x2x3xf32>, %sc: tensor<2xi64>, %rc: tensor<2xi64>,
                       %n: tensor<4xi64>, %y: tensor<4x3xf32>)
    -> (tensor<12x2x3xf32>, tensor<4xi64>, tensor<8x3xf32>) {
  %a = dsv3.all_to_all %x, %sc, %rc {group = "expert", ranks = 2 : i64}
      : (tensor<6x2x3xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<12x2x3xf32>
  %b = dsv3.all_reduce %n {ranks = 2 : i64} : tensor<4xi64> -> tensor<4xi64>
  %r = dsv3.all_gather_start %y {ranks = 2 : i64} : tensor<4x3xf32> -> !dsv3.request<tensor<8x3xf32>>
  %c = dsv3.wait %r : !dsv3.request<tensor<8x3xf32>> -> tensor<8x3xf32>
  return %a, %b, %c : tensor<12x2x3xf32>, tensor<4xi64>, tensor<8x3xf32>
}

// Two identical collectives stay two calls, and an unused one stays: every
// rank must issue the same collectives.
// KEPT-LABEL: func.func @twice
// KEPT-COUNT-3: dsv3_codegen.ukernel "dsv3rt_all_reduce_f32"
func.func @twice(%x: tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>) {
  %a = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  %b = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  %unused = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  return %a, %b : tensor<8xf32>, tensor<8xf32>
}

// This rank's block: the padded tensor sliced at rank * block rows, the
// rank from the runtime; the gradient inserts the block into zeros.
// CHECK-LABEL: func.func @blocks
// CHECK: %[[FILL:.*]] = linalg.fill ins(%{{.*}} : i64) outs(%{{.*}} : tensor<8x2xi64>)
// CHECK: %[[PAD:.*]] = tensor.insert_slice %arg0 into %[[FILL]][0, 0] [7, 2] [1, 1]
// CHECK: %[[RANK:.*]] = call @dsv3rt_comm_rank(%{{.*}}) : (i64) -> i64
// CHECK: %[[OFF:.*]] = arith.muli %[[RANK]], %{{.*}} : i64
// CHECK: %[[IDX:.*]] = arith.index_cast %[[OFF]] : i64 to index
// CHECK: tensor.extract_slice %[[PAD]][%[[IDX]], 0] [4, 2] [1, 1] : tensor<8x2xi64> to tensor<4x2xi64>
// CHECK: call @dsv3rt_comm_rank
// CHECK: tensor.insert_slice %arg1 into %{{.*}}[%{{.*}}, 0] [4, 5] [1, 1] : tensor<4x5xf32> into tensor<8x5xf32>
// CHECK: tensor.extract_slice %{{.*}}[0, 0] [7, 5] [1, 1] : tensor<8x5xf32> to tensor<7x5xf32>
func.func @blocks(%ids: tensor<7x2xi64>, %dy: tensor<4x5xf32>) -> (tensor<4x2xi64>, tensor<7x5xf32>) {
  %m = dsv3.rank_rows %ids {group = "expert", ranks = 2 : i64, pad = 9 : i64} : tensor<7x2xi64> -> tensor<4x2xi64>
  %g = dsv3.rank_rows_grad %dy {group = "expert", ranks = 2 : i64} : tensor<4x5xf32> -> tensor<7x5xf32>
  return %m, %g : tensor<4x2xi64>, tensor<7x5xf32>
}
