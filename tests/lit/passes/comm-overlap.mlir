// RUN: dsv3-opt %s --dsv3-comm-overlap | FileCheck %s

// A count exchange, the dispatch it sizes, expert compute and a combine,
// with a shared-expert branch that reads no exchange. Each all-to-all
// becomes a start right after its operands' producers and a wait right
// before the first op that needs its value. The shared branch moves between
// the dispatch's start and wait (the first exchange of rows that can hide
// it); the count exchange, tiny, takes no compute.
// CHECK-LABEL: func.func @moe
// CHECK-NEXT: %[[SC:.*]] = dsv3.all_to_all_start %arg2, %arg3, %arg3 {group = "expert", ranks = 2 : i64}
// CHECK-NEXT: %[[RC:.*]] = dsv3.wait %[[SC]] {overlapped_ops = 0 : i64}
// CHECK-NEXT: %[[S1:.*]] = dsv3.all_to_all_start %arg0, %arg2, %[[RC]] {group = "expert", ranks = 2 : i64}
// CHECK-NEXT: %[[SH1:.*]] = arith.mulf %arg1, %arg1
// CHECK-NEXT: %[[SH2:.*]] = arith.addf %[[SH1]], %arg1
// CHECK-NEXT: %[[SH3:.*]] = arith.subf %[[SH2]], %arg1
// CHECK-NEXT: %[[D:.*]] = dsv3.wait %[[S1]] {overlapped_ops = 3 : i64}
// CHECK-NEXT: %[[E:.*]] = arith.mulf %[[D]], %[[D]]
// CHECK-NEXT: %[[S2:.*]] = dsv3.all_to_all_start %[[E]], %[[RC]], %arg2 {group = "expert", ranks = 2 : i64}
// CHECK-NEXT: %[[C:.*]] = dsv3.wait %[[S2]] {overlapped_ops = 0 : i64}
// CHECK-NEXT: %[[OUT:.*]] = arith.addf %[[C]], %[[SH3]]
// CHECK-NEXT: return %[[OUT]]
func.func @moe(%x: tensor<4x8xf32>, %h: tensor<4x8xf32>, %sc: tensor<2xi64>, %ones: tensor<2xi64>)
    -> tensor<4x8xf32> {
  %rc = dsv3.all_to_all %sc, %ones, %ones {group = "expert", ranks = 2 : i64}
      : (tensor<2xi64>, tensor<2xi64>, tensor<2xi64>) -> tensor<2xi64>
  %d = dsv3.all_to_all %x, %sc, %rc {group = "expert", ranks = 2 : i64}
      : (tensor<4x8xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<4x8xf32>
  %e = arith.mulf %d, %d : tensor<4x8xf32>
  %c = dsv3.all_to_all %e, %rc, %sc {group = "expert", ranks = 2 : i64}
      : (tensor<4x8xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<4x8xf32>
  %sh1 = arith.mulf %h, %h : tensor<4x8xf32>
  %sh2 = arith.addf %sh1, %h : tensor<4x8xf32>
  %sh3 = arith.subf %sh2, %h : tensor<4x8xf32>
  %out = arith.addf %c, %sh3 : tensor<4x8xf32>
  return %out : tensor<4x8xf32>
}

// Collectives keep their order: a start does not move above an all-reduce
// (ops with effects never pass each other), and an all-reduce that does
// not read the exchanged rows still stays after the wait.
// CHECK-LABEL: func.func @ordered
// CHECK-NEXT: %[[R:.*]] = dsv3.all_reduce %arg1
// CHECK-NEXT: %[[S:.*]] = dsv3.all_to_all_start %arg0
// CHECK-NEXT: %[[W:.*]] = dsv3.wait %[[S]] {overlapped_ops = 0 : i64}
// CHECK-NEXT: %[[R2:.*]] = dsv3.all_reduce %[[R]]
// CHECK-NEXT: return %[[W]], %[[R2]]
func.func @ordered(%x: tensor<4x8xf32>, %g: tensor<8xf32>, %sc: tensor<2xi64>, %rc: tensor<2xi64>)
    -> (tensor<4x8xf32>, tensor<8xf32>) {
  %r = dsv3.all_reduce %g {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  %d = dsv3.all_to_all %x, %sc, %rc {group = "expert", ranks = 2 : i64}
      : (tensor<4x8xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<4x8xf32>
  %r2 = dsv3.all_reduce %r {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  return %d, %r2 : tensor<4x8xf32>, tensor<8xf32>
}
