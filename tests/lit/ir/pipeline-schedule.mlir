// RUN: dsv3-opt %s | dsv3-opt | FileCheck %s

// A pipeline schedule round-trips: two ranks, two stages, two
// micro-batches of 1F1B, each hidden state and gradient a send on one rank
// and a receive on the other.
// CHECK:      dsv3.pipeline_schedule "1f1b" ranks 2 stages 2 micro_batches 2 {
// CHECK-NEXT:   dsv3.pipeline_rank 0 {
// CHECK-NEXT:     dsv3.pipeline_run "F" stage 0 micro_batch 0 {section = 1 : i64}
// CHECK-NEXT:     dsv3.pipeline_send "hidden" stage 1 micro_batch 0 to 1
// CHECK:        dsv3.pipeline_rank 1 {
// CHECK-NEXT:     dsv3.pipeline_recv "hidden" stage 1 micro_batch 0 from 0
// CHECK:          dsv3.pipeline_run_pair F stage 1 micro_batch 1 and B stage 1 micro_batch 0
dsv3.pipeline_schedule "1f1b" ranks 2 stages 2 micro_batches 2 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0 {section = 1 : i64}
    dsv3.pipeline_send "hidden" stage 1 micro_batch 0 to 1
    dsv3.pipeline_run "F" stage 0 micro_batch 1
    dsv3.pipeline_send "hidden" stage 1 micro_batch 1 to 1
    dsv3.pipeline_recv "grad.hidden" stage 0 micro_batch 0 from 1
    dsv3.pipeline_run "B" stage 0 micro_batch 0
    dsv3.pipeline_recv "grad.hidden" stage 0 micro_batch 1 from 1
    dsv3.pipeline_run "Bi" stage 0 micro_batch 1
    dsv3.pipeline_run "W" stage 0 micro_batch 1
  }
  dsv3.pipeline_rank 1 {
    dsv3.pipeline_recv "hidden" stage 1 micro_batch 0 from 0
    dsv3.pipeline_run "F" stage 1 micro_batch 0
    dsv3.pipeline_recv "hidden" stage 1 micro_batch 1 from 0
    dsv3.pipeline_run_pair F stage 1 micro_batch 1 and B stage 1 micro_batch 0
    dsv3.pipeline_send "grad.hidden" stage 0 micro_batch 0 to 0
    dsv3.pipeline_run "B" stage 1 micro_batch 1
    dsv3.pipeline_send "grad.hidden" stage 0 micro_batch 1 to 0
  }
}
