// RUN: dsv3-opt %s -split-input-file -verify-diagnostics

// A message sent and never received would leave the sender's transfer
// pending forever.
// expected-error @+1 {{rank 0 sends "hidden" of stage 1, micro-batch 0 to rank 1, which never receives it}}
dsv3.pipeline_schedule "1f1b" ranks 2 stages 2 micro_batches 1 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
    dsv3.pipeline_send "hidden" stage 1 micro_batch 0 to 1
    dsv3.pipeline_run "F" stage 1 micro_batch 0
  }
  dsv3.pipeline_rank 1 {
  }
}

// -----

// A receive nobody sends would block its rank forever.
// expected-error @+1 {{rank 1 receives "grad.hidden" of stage 0, micro-batch 0 from rank 0, which never sends it}}
dsv3.pipeline_schedule "1f1b" ranks 2 stages 2 micro_batches 1 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
    dsv3.pipeline_run "F" stage 1 micro_batch 0
  }
  dsv3.pipeline_rank 1 {
    dsv3.pipeline_recv "grad.hidden" stage 0 micro_batch 0 from 0
  }
}

// -----

dsv3.pipeline_schedule "1f1b" ranks 2 stages 2 micro_batches 1 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
    dsv3.pipeline_send "hidden" stage 1 micro_batch 0 to 1
  }
  dsv3.pipeline_rank 1 {
    // expected-error @+1 {{runs stage 1 of micro-batch 0 before it received its "hidden"}}
    dsv3.pipeline_run "F" stage 1 micro_batch 0
    dsv3.pipeline_recv "hidden" stage 1 micro_batch 0 from 0
  }
}

// -----

// expected-error @+1 {{never runs the forward of stage 0 for micro-batch 1}}
dsv3.pipeline_schedule "1f1b" ranks 1 stages 1 micro_batches 2 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
  }
}

// -----

dsv3.pipeline_schedule "1f1b" ranks 1 stages 1 micro_batches 1 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
    // expected-error @+1 {{runs the forward of stage 0 for micro-batch 0 a second time}}
    dsv3.pipeline_run "F" stage 0 micro_batch 0
  }
}

// -----

dsv3.pipeline_schedule "dualpipe" ranks 1 stages 2 micro_batches 2 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
    dsv3.pipeline_run "F" stage 1 micro_batch 0
    // expected-error @+1 {{pairs two chunks of micro-batch 0; an F&B pair overlaps two micro-batches}}
    dsv3.pipeline_run_pair F stage 0 micro_batch 0 and B stage 1 micro_batch 0
  }
}

// -----

dsv3.pipeline_schedule "dualpipe" ranks 1 stages 2 micro_batches 2 {
  dsv3.pipeline_rank 0 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
    dsv3.pipeline_run "F" stage 1 micro_batch 0
    // expected-error @+1 {{fused pair @stage0_forward_and_stage1_backward is not a function of the module}}
    dsv3.pipeline_run_pair F stage 0 micro_batch 1 and B stage 1 micro_batch 0 fused @stage0_forward_and_stage1_backward
    dsv3.pipeline_run "F" stage 1 micro_batch 1
  }
}

// -----

dsv3.pipeline_schedule "1f1b" ranks 1 stages 1 micro_batches 1 {
  dsv3.pipeline_rank 0 {
    // expected-error @+1 {{pass "X" is not F, B, Bi or W}}
    dsv3.pipeline_run "X" stage 0 micro_batch 0
  }
}

// -----

dsv3.pipeline_schedule "1f1b" ranks 2 stages 2 micro_batches 1 {
  // expected-error @+1 {{is rank 1 where rank 0 comes (ranks in order from 0)}}
  dsv3.pipeline_rank 1 {
    dsv3.pipeline_run "F" stage 0 micro_batch 0
  }
}
