// RUN: dsv3-opt %s -split-input-file --dsv3-comm-overlap | FileCheck %s

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

// -----
// With a pipeline schedule, each F&B pair becomes one function whose two
// chunks take turns, each turn ending at the start of a rows exchange: the
// backward's combine-gradient starts, the forward's attention runs and its
// dispatch starts, the backward's expert gradient runs (after its wait) and
// its dispatch-gradient starts, the forward's experts run and its combine
// starts, then the backward's attention gradient and the forward's last op.
// So each exchange of one micro-batch is in flight while the other one
// computes. Arguments and results are both chunks', renamed by chunk.
// CHECK-LABEL: dsv3.pipeline_run_pair F stage 0 micro_batch 1 and B stage 1 micro_batch 0 fused @stage0_forward_and_stage1_backward
// CHECK-LABEL: func.func @stage0_forward_and_stage1_backward(
// CHECK-SAME: %arg0: tensor<4x8xf32> {dsv3.input = "forward.hidden"}
// CHECK-SAME: %arg2: tensor<4x8xf32> {dsv3.input = "backward.grad.hidden"}
// CHECK-SAME: -> (tensor<4x8xf32> {dsv3.output = "forward.hidden", dsv3.output_role = #dsv3.output_role<activation>}, tensor<4x8xf32> {dsv3.output = "backward.grad.hidden", dsv3.output_role = #dsv3.output_role<activation>})
// CHECK-NEXT: %[[CB:.*]] = arith.negf %arg2
// CHECK-NEXT: %[[SCB:.*]] = dsv3.all_to_all_start %[[CB]]
// CHECK-NEXT: %[[AF:.*]] = arith.mulf %arg0, %arg0
// CHECK-NEXT: %[[SDF:.*]] = dsv3.all_to_all_start %[[AF]]
// CHECK-NEXT: %[[WCB:.*]] = dsv3.wait %[[SCB]]
// CHECK-NEXT: %[[MB:.*]] = arith.mulf %[[WCB]], %[[WCB]]
// CHECK-NEXT: %[[SDB:.*]] = dsv3.all_to_all_start %[[MB]]
// CHECK-NEXT: %[[WDF:.*]] = dsv3.wait %[[SDF]]
// CHECK-NEXT: %[[MF:.*]] = arith.addf %[[WDF]], %[[WDF]]
// CHECK-NEXT: %[[SCF:.*]] = dsv3.all_to_all_start %[[MF]]
// CHECK-NEXT: %[[WDB:.*]] = dsv3.wait %[[SDB]]
// CHECK-NEXT: %[[AB:.*]] = arith.subf %[[WDB]], %arg2
// CHECK-NEXT: %[[WCF:.*]] = dsv3.wait %[[SCF]]
// CHECK-NEXT: %[[OF:.*]] = arith.addf %[[WCF]], %arg0
// CHECK-NEXT: return %[[OF]], %[[AB]]
module {
  dsv3.pipeline_schedule "1f1b" ranks 1 stages 2 micro_batches 2 {
    dsv3.pipeline_rank 0 {
      dsv3.pipeline_run "F" stage 0 micro_batch 0
      dsv3.pipeline_run "F" stage 1 micro_batch 0
      dsv3.pipeline_run_pair F stage 0 micro_batch 1 and B stage 1 micro_batch 0
      dsv3.pipeline_run "F" stage 1 micro_batch 1
      dsv3.pipeline_run "B" stage 0 micro_batch 0
      dsv3.pipeline_run "B" stage 1 micro_batch 1
      dsv3.pipeline_run "B" stage 0 micro_batch 1
    }
  }
  // Attention, dispatch, experts, combine.
  func.func @stage0_forward(%h: tensor<4x8xf32> {dsv3.input = "hidden"}, %c: tensor<2xi64> {dsv3.input = "saved.0"})
      -> (tensor<4x8xf32> {dsv3.output = "hidden", dsv3.output_role = #dsv3.output_role<activation>}) {
    %a = arith.mulf %h, %h : tensor<4x8xf32>
    %d = dsv3.all_to_all %a, %c, %c {group = "expert", ranks = 2 : i64}
        : (tensor<4x8xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<4x8xf32>
    %m = arith.addf %d, %d : tensor<4x8xf32>
    %o = dsv3.all_to_all %m, %c, %c {group = "expert", ranks = 2 : i64}
        : (tensor<4x8xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<4x8xf32>
    %r = arith.addf %o, %h : tensor<4x8xf32>
    return %r : tensor<4x8xf32>
  }
  // Combine gradient, expert gradient, dispatch gradient, attention gradient.
  func.func @stage1_backward(%g: tensor<4x8xf32> {dsv3.input = "grad.hidden"}, %c: tensor<2xi64> {dsv3.input = "saved.0"})
      -> (tensor<4x8xf32> {dsv3.output = "grad.hidden", dsv3.output_role = #dsv3.output_role<activation>}) {
    %cb = arith.negf %g : tensor<4x8xf32>
    %e = dsv3.all_to_all %cb, %c, %c {group = "expert", ranks = 2 : i64}
        : (tensor<4x8xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<4x8xf32>
    %mb = arith.mulf %e, %e : tensor<4x8xf32>
    %db = dsv3.all_to_all %mb, %c, %c {group = "expert", ranks = 2 : i64}
        : (tensor<4x8xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<4x8xf32>
    %ab = arith.subf %db, %g : tensor<4x8xf32>
    return %ab : tensor<4x8xf32>
  }
}
