//===- DSV3PipelineOps.td - a pipeline schedule as IR ----*- tablegen -*-===//
//
// What each pipeline rank runs, in order: chunk executions (the functions
// dsv3-pipeline-partition outlines, or an F&B pair dsv3-comm-overlap fuses)
// and the hidden states and gradients that pass between stages. One
// `dsv3.pipeline_schedule` at module level holds one `dsv3.pipeline_rank`
// per rank. The verifier checks what every schedule must satisfy to run
// (each message sent once and received once by the rank it names, each
// received value before the chunk that reads it, each forward once);
// dsv3-pipeline-partition checks that every stage it names exists. The
// dialect knows no transport: the host's executor carries the messages.
//
//   dsv3.pipeline_schedule "dualpipev" ranks 2 stages 4 micro_batches 4 {
//     dsv3.pipeline_rank 0 {
//       dsv3.pipeline_run "F" stage 0 micro_batch 0
//       dsv3.pipeline_send "hidden" stage 1 micro_batch 0 to 1
//       ...
//       dsv3.pipeline_run_pair F stage 0 micro_batch 3 and B stage 3 micro_batch 0
//           fused @stage0_forward_and_stage3_backward
//     }
//     dsv3.pipeline_rank 1 { ... }
//   }
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3PIPELINEOPS_TD
#define DSV3_IR_DSV3PIPELINEOPS_TD

include "ir/DSV3/DSV3Base.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"

defvar DSV3_Count = ConfinedAttr<I64Attr, [IntMinValue<1>]>;
defvar DSV3_Index = ConfinedAttr<I64Attr, [IntNonNegative]>;

def DSV3_PipelineScheduleOp : DSV3_Op<"pipeline_schedule", [
    HasParent<"::mlir::ModuleOp">, NoTerminator, SingleBlock, NoRegionArguments]> {
  let summary = "every pipeline rank's program of one training step";
  let description = [{
    `kind` names the generator (`1f1b`, `zb1p`, `dualpipe`, `dualpipev`);
    `ranks` pipeline ranks run `stages` model stages over `micro_batches`
    micro-batches. The body holds one `dsv3.pipeline_rank` per rank, in
    rank order.
  }];
  let arguments = (ins StrAttr:$kind, DSV3_Count:$ranks, DSV3_Count:$stages,
                       DSV3_Count:$micro_batches);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $kind `ranks` $ranks `stages` $stages `micro_batches` $micro_batches
    attr-dict-with-keyword $body
  }];
  let hasRegionVerifier = 1;
}

def DSV3_PipelineRankOp : DSV3_Op<"pipeline_rank", [
    HasParent<"PipelineScheduleOp">, NoTerminator, SingleBlock, NoRegionArguments]> {
  let summary = "one pipeline rank's steps in program order";
  let arguments = (ins DSV3_Index:$rank);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$rank attr-dict-with-keyword $body";
}

def DSV3_PipelineRunOp : DSV3_Op<"pipeline_run", [HasParent<"PipelineRankOp">]> {
  let summary = "runs one chunk of one stage for one micro-batch";
  let description = [{
    `pass` is the chunk's part of the step: `F` (forward), `B` (input and
    weight gradient), `Bi` (input gradient) or `W` (the weight gradient of
    the oldest pending `Bi` of the stage). The chunk is the function
    dsv3-pipeline-partition outlines for it (`@stage<k>_forward`,
    `_backward`, `_backward_input`, `_backward_weight`); the schedule names
    stages rather than functions, so it can sit in the module from import
    on, before the stages are split. `section` (optional) is the phase of
    the generator the step comes from, the column it takes in a printed
    schedule table.
  }];
  let arguments = (ins StrAttr:$pass, DSV3_Index:$stage, DSV3_Index:$micro_batch,
                       OptionalAttr<I64Attr>:$section);
  let assemblyFormat = "$pass `stage` $stage `micro_batch` $micro_batch attr-dict";
  let hasVerifier = 1;
}

def DSV3_PipelineRunPairOp : DSV3_Op<"pipeline_run_pair", [
    HasParent<"PipelineRankOp">, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "a forward of one micro-batch and a backward of another, run together";
  let description = [{
    DualPipe's F&B step: the forward of one stage and micro-batch and the
    full backward (B) of another stage and micro-batch. Without `fused` the
    host runs the two chunks one after the other; `fused` names the function
    dsv3-comm-overlap built from both, with each one's exchanges in flight
    while the other computes (its arguments and results are the two
    chunks', named `forward.<name>` and `backward.<name>`).
  }];
  let arguments = (ins DSV3_Index:$forward_stage, DSV3_Index:$forward_micro_batch,
                       DSV3_Index:$backward_stage, DSV3_Index:$backward_micro_batch,
                       OptionalAttr<FlatSymbolRefAttr>:$fused, OptionalAttr<I64Attr>:$section);
  let assemblyFormat = [{
    `F` `stage` $forward_stage `micro_batch` $forward_micro_batch
    `and` `B` `stage` $backward_stage `micro_batch` $backward_micro_batch
    (`fused` $fused^)? attr-dict
  }];
}

class DSV3_PipelineMessageOp<string mnemonic, string peer> : DSV3_Op<mnemonic, [
    HasParent<"PipelineRankOp">]> {
  let arguments = (ins StrAttr:$value, DSV3_Index:$stage, DSV3_Index:$micro_batch,
                       DSV3_Index:$peer);
  let assemblyFormat = "$value `stage` $stage `micro_batch` $micro_batch `" # peer #
                       "` $peer attr-dict";
  let hasVerifier = 1;
}

def DSV3_PipelineSendOp : DSV3_PipelineMessageOp<"pipeline_send", "to"> {
  let summary = "sends a stage's input to the rank that runs that stage";
  let description = [{
    `value` is `hidden` (the input of `stage`, from the forward of the stage
    before) or `grad.hidden` (the gradient seed of `stage`, from the
    backward of the stage after), for micro-batch `micro_batch`; `peer` is
    the rank that receives it.
  }];
}

def DSV3_PipelineRecvOp : DSV3_PipelineMessageOp<"pipeline_recv", "from"> {
  let summary = "receives a stage's input from the rank that computed it";
  let description = [{
    The matching `dsv3.pipeline_send` is on rank `peer`. The value is held
    until the last chunk of the stage and micro-batch that reads it.
  }];
}

#endif // DSV3_IR_DSV3PIPELINEOPS_TD
