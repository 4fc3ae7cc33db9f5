// RUN: dsv3-opt %s | dsv3-opt | FileCheck %s
// RUN: dsv3-opt %s -canonicalize -cse | FileCheck %s --check-prefix=KEPT

// The communication ops round-trip, blocking and asynchronous.
// CHECK-LABEL: func.func @collectives
// CHECK: dsv3.all_reduce %{{.*}} {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
// CHECK: dsv3.all_gather %{{.*}} {ranks = 2 : i64} : tensor<4x3xf32> -> tensor<8x3xf32>
// CHECK: dsv3.reduce_scatter %{{.*}} {ranks = 2 : i64} : tensor<8x3xf32> -> tensor<4x3xf32>
// CHECK: dsv3.all_to_all %{{.*}}, %{{.*}}, %{{.*}} {ranks = 2 : i64} : (tensor<6x3xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<12x3xf32>
func.func @collectives(%x: tensor<8xf32>, %y: tensor<4x3xf32>, %z: tensor<8x3xf32>,
                       %rows: tensor<6x3xf32>, %sc: tensor<2xi64>, %rc: tensor<2xi64>)
    -> (tensor<8xf32>, tensor<8x3xf32>, tensor<4x3xf32>, tensor<12x3xf32>) {
  %a = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  %b = dsv3.all_gather %y {ranks = 2 : i64} : tensor<4x3xf32> -> tensor<8x3xf32>
  %c = dsv3.reduce_scatter %z {ranks = 2 : i64} : tensor<8x3xf32> -> tensor<4x3xf32>
  %d = dsv3.all_to_all %rows, %sc, %rc {ranks = 2 : i64}
      : (tensor<6x3xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<12x3xf32>
  return %a, %b, %c, %d : tensor<8xf32>, tensor<8x3xf32>, tensor<4x3xf32>, tensor<12x3xf32>
}

// CHECK-LABEL: func.func @overlapped
// CHECK: %[[R:.*]] = dsv3.all_reduce_start %{{.*}} {ranks = 4 : i64} : tensor<8xf32> -> !dsv3.request<tensor<8xf32>>
// CHECK: arith.addf
// CHECK: dsv3.wait %[[R]] : !dsv3.request<tensor<8xf32>> -> tensor<8xf32>
func.func @overlapped(%g: tensor<8xf32>, %h: tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>) {
  %r = dsv3.all_reduce_start %g {ranks = 4 : i64} : tensor<8xf32> -> !dsv3.request<tensor<8xf32>>
  %busy = arith.addf %h, %h : tensor<8xf32>
  %sum = dsv3.wait %r : !dsv3.request<tensor<8xf32>> -> tensor<8xf32>
  return %sum, %busy : tensor<8xf32>, tensor<8xf32>
}

// CHECK-LABEL: func.func @pipeline_stage
// CHECK: %[[S:.*]] = dsv3.send %{{.*}} {peer = 1 : i64, tag = 3 : i64} : tensor<2x4xf32> -> !dsv3.request<none>
// CHECK: %[[IN:.*]] = dsv3.recv {peer = 1 : i64, tag = 4 : i64} : !dsv3.request<tensor<2x4xf32>>
// CHECK: dsv3.wait %[[S]] : !dsv3.request<none>
// CHECK-NEXT: dsv3.wait %[[IN]] : !dsv3.request<tensor<2x4xf32>> -> tensor<2x4xf32>
func.func @pipeline_stage(%act: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %s = dsv3.send %act {peer = 1 : i64, tag = 3 : i64} : tensor<2x4xf32> -> !dsv3.request<none>
  %r = dsv3.recv {peer = 1 : i64, tag = 4 : i64} : !dsv3.request<tensor<2x4xf32>>
  dsv3.wait %s : !dsv3.request<none>
  %grad = dsv3.wait %r : !dsv3.request<tensor<2x4xf32>> -> tensor<2x4xf32>
  return %grad : tensor<2x4xf32>
}

// Collectives are not Pure: every rank must issue the same ones in the same
// order, so CSE may not merge two and DCE may not drop an unused one.
// KEPT-LABEL: func.func @not_pure
// KEPT-COUNT-3: dsv3.all_reduce
func.func @not_pure(%x: tensor<8xf32>) -> tensor<8xf32> {
  %a = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  %b = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  %unused = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  %s = arith.addf %a, %b : tensor<8xf32>
  return %s : tensor<8xf32>
}

// A group other than the world is printed; rank_rows pads integer blocks.
// CHECK-LABEL: func.func @expert_group
// CHECK: dsv3.all_to_all %{{.*}} {group = "expert", ranks = 2 : i64}
// CHECK: dsv3.rank_rows %{{.*}} {group = "expert", pad = 16 : i64, ranks = 4 : i64} : tensor<62x4xi64> -> tensor<16x4xi64>
// CHECK: dsv3.rank_rows_grad %{{.*}} {group = "expert", ranks = 4 : i64} : tensor<16x8xf32> -> tensor<62x8xf32>
func.func @expert_group(%rows: tensor<6x3xf32>, %sc: tensor<2xi64>, %rc: tensor<2xi64>,
                        %ids: tensor<62x4xi64>, %dy: tensor<16x8xf32>)
    -> (tensor<12x3xf32>, tensor<16x4xi64>, tensor<62x8xf32>) {
  %d = dsv3.all_to_all %rows, %sc, %rc {group = "expert", ranks = 2 : i64}
      : (tensor<6x3xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<12x3xf32>
  %m = dsv3.rank_rows %ids {group = "expert", ranks = 4 : i64, pad = 16 : i64} : tensor<62x4xi64> -> tensor<16x4xi64>
  %g = dsv3.rank_rows_grad %dy {group = "expert", ranks = 4 : i64} : tensor<16x8xf32> -> tensor<62x8xf32>
  return %d, %m, %g : tensor<12x3xf32>, tensor<16x4xi64>, tensor<62x8xf32>
}
