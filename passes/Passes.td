//===- Passes.td - passes on dsv3 IR ---------------------*- tablegen -*-===//
//
// Transformations that keep the program in the dsv3 dialect. Conversions out
// of it are declared in lowering/Passes.td.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_PASSES_PASSES_TD
#define DSV3_PASSES_PASSES_TD

include "mlir/Pass/PassBase.td"

def DSV3DecomposePass : Pass<"dsv3-decompose"> {
  let summary = "Expand model-structure ops into tensor-level dsv3 ops";
  let description = [{
    Rewrites `dsv3.mla_attention`, `dsv3.mlp`, `dsv3.moe` and
    `dsv3.mtp_input` into `dsv3.linear`, `dsv3.rms_norm`, `dsv3.rope`,
    `dsv3.mla_core`, `dsv3.swiglu`, `dsv3.moe_router`, and the routed
    experts as `dsv3.moe_dispatch`, `dsv3.grouped_linear` and
    `dsv3.moe_combine`, plus tensor reshapes/slices. After this pass the IR is what
    `dsv3c compile --emit=tensor` prints.
  }];
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect"];
}

def DSV3AutodiffPass : Pass<"dsv3-autodiff", "::mlir::ModuleOp"> {
  let summary = "Reverse-mode differentiation of a tensor-level dsv3 function";
  let description = [{
    Builds `@<function>_grad`: the forward computation followed by its
    reverse sweep, returning the original outputs and, for every parameter
    the objective depends on, `grad.<parameter name>` (summed over all uses).
    Ops with weights get separate input-gradient (B) and weight-gradient (W)
    ops. The chosen expert ids and the routing bias are not differentiated.
    Run after `dsv3-decompose`.
  }];
  let options = [
    Option<"function", "function", "std::string", "\"forward\"",
           "Function to differentiate">,
    Option<"objective", "objective", "std::string", "\"total_loss\"",
           "Name (dsv3.output) of the scalar result to differentiate">,
    Option<"keepForward", "keep-forward", "bool", "false",
           "Keep the original function next to the gradient function">
  ];
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

def DSV3ExpertParallelPass : Pass<"dsv3-expert-parallel", "::mlir::ModuleOp"> {
  let summary = "Shard the routed experts over the expert-parallel ranks, with all-to-all exchanges";
  let description = [{
    Each of the `ranks` ranks of the "expert" group keeps `n_routed_experts
    / ranks` experts of every MoE layer (their `dsv3.param` gets `shard
    "expert"`). Between `dsv3.moe_dispatch` and the grouped linears, a
    rank's block of the tokens goes to the ranks owning their chosen
    experts (`dsv3.all_to_all` of the counts, then of the rows, into a
    static worst-case capacity); the expert outputs come back by the
    reverse exchange before `dsv3.moe_combine`, and an all-gather gives
    every rank all tokens' outputs. Routing runs on the whole batch on every
    rank, so expert loads and balance losses are global without an
    exchange. Run after `dsv3-decompose` and before `dsv3-autodiff`.
  }];
  let options = [
    Option<"ranks", "ranks", "int64_t", "1", "Size of the expert-parallel group">
  ];
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect"];
}

def DSV3PipelinePartitionPass : Pass<"dsv3-pipeline-partition", "::mlir::ModuleOp"> {
  let summary = "Split each differentiated pipeline stage into forward, input-gradient and weight-gradient chunks";
  let description = [{
    For every `@stage<k>_grad` (a pipeline stage the importer emitted and
    `dsv3-autodiff` differentiated, its output hidden state's gradient a
    seed argument `grad.hidden`), builds the chunks a pipeline schedule
    runs: `@stage<k>_forward` (F: the stage's outputs), `@stage<k>_backward_input`
    (Bi: `grad.hidden`, the gradient sent to the previous stage),
    `@stage<k>_backward_weight` (W: the parameter gradients) and
    `@stage<k>_backward` (B: Bi and W in one call), and erases the
    gradient function. The split follows dataflow: F is the slice of the
    forward outputs, Bi the rest of the slice of the input gradient, W the
    rest. Every value a chunk computes for a later chunk of the same
    micro-batch is a result `saved.<n>` (role `saved`) and an argument of
    the same name: what a schedule keeps alive between chunks is in the IR.
    Constants, parameters and integer values derived from the token ids are
    cloned instead. Run after `dsv3-autodiff`.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

def DSV3CommOverlapPass : Pass<"dsv3-comm-overlap", "::mlir::ModuleOp"> {
  let summary = "Start each expert all-to-all early and wait for it late, with independent compute between";
  let description = [{
    Every `dsv3.all_to_all` becomes `dsv3.all_to_all_start` (moved up to
    right after the producers of its operands) and `dsv3.wait` (every
    side-effect-free op that does not depend on the exchanged rows moves
    above it, so it sits right before the first consumer). What lies
    between runs while the rows travel: the shared expert during dispatch
    and combine, the weight gradients in a backward. Ops with effects,
    collectives included, keep their order, so every rank issues the same
    collectives in the same order. Each wait records how many ops moved
    above it (`overlapped_ops`).

    With a `dsv3.pipeline_schedule` in the module, every F&B pair it lists
    becomes one function `@stage<a>_forward_and_stage<b>_backward` (named
    in the pair's `fused` attribute): the backward's and the forward's ops
    take turns, each turn ending at the start of a rows exchange, so one
    micro-batch's dispatch or combine travels while the other micro-batch
    computes (DeepSeek-V3's F&B order: combine(B), attention(F),
    dispatch(F), MLP(B), dispatch(B), MLP(F), combine(F), attention(B)).
    Its arguments and results are both chunks', named `forward.<name>` and
    `backward.<name>`. Run on tensor-level IR after `dsv3-expert-parallel`
    and `dsv3-autodiff` (and `dsv3-pipeline-partition`).
  }];
  let options = [
    Option<"fusePairs", "fuse-pairs", "bool", "true",
           "Fuse each F&B pair of the module's pipeline schedule into one function">,
  ];
}

def DSV3NodeLimitedRoutingPass : Pass<"dsv3-node-limited-routing", "::mlir::ModuleOp"> {
  let summary = "Limit each token's routed experts to a few nodes of the expert-parallel group";
  let description = [{
    DeepSeek-V3's node-limited routing: the routed experts are spread over
    `nodes` nodes (consecutive blocks of experts, as `dsv3-expert-parallel`
    places them on consecutive ranks), and each token's experts come from
    at most `max-nodes` of them, chosen by the sum of their best
    `ceil(top_k / max-nodes)` biased affinities. Sets `nodes`/`max_nodes`
    on every `dsv3.moe_router` (see its description for how the rule
    composes with `n_group`/`topk_group`); nothing when `max-nodes` is 0 or
    not below `nodes`. Run after `dsv3-decompose`.
  }];
  let options = [
    Option<"nodes", "nodes", "int64_t", "1", "Nodes the routed experts are spread over">,
    Option<"maxNodes", "max-nodes", "int64_t", "0",
           "Nodes a token's experts may come from (0: no limit)">
  ];
}

def DSV3FP8TileQuantizePass : Pass<"dsv3-fp8-tile-quantize", "::mlir::func::FuncOp"> {
  let summary = "DeepSeek-V3 fine-grained FP8: linear layers become quantize + block-scaled FP8 GEMMs";
  let description = [{
    Rewrites `dsv3.linear` (forward, "fprop"), `dsv3.linear_grad_input`
    ("dgrad") and `dsv3.linear_grad_weight` ("wgrad") into `dsv3.fp8_quantize`
    and `dsv3.fp8_gemm`: activations and activation gradients in 1x128 tiles
    along the contracted dimension, weights in 128x128 blocks (quantized once
    per function and read transposed by dgrad), and the two operands of the
    weight-gradient GEMM re-quantized in 128x1 tiles along tokens. Partial
    sums are promoted to FP32 every `promotion-interval` products. The
    routed experts' `dsv3.grouped_linear` family gets the same recipe per
    expert (`dsv3.fp8_m_grouped_gemm`, `dsv3.fp8_k_grouped_gemm`): each
    expert's weight has its own blocks and wgrad's token tiles restart at
    each expert's first row. GEMMs with dynamic shapes stay float32.

    Which layers stay in float32 is decided by their weight's role (the
    `role` the importer sets on `dsv3.param`): by default the embedding, the
    output heads, the MTP projection and the routers (`high-precision-roles`
    replaces that set); `high-precision` adds layers by weight-name
    substring. Norms, attention cores and the routers' selection are not
    linear layers and never change.
    With `cache-activations=fp8`, the weight-gradient GEMM re-quantizes the
    forward's FP8 copy of its input instead of the float32 activation, as the
    recipe's FP8 activation caching does. Run after `dsv3-decompose` (and
    after `dsv3-autodiff` when training).
  }];
  let options = [
    Option<"format", "format", "std::string", "\"e4m3\"",
           "FP8 format of every code: e4m3 (the recipe) or e5m2">,
    Option<"activationTile", "activation-tile", "int64_t", "128",
           "Width of the 1xN activation tiles along K">,
    Option<"weightBlock", "weight-block", "int64_t", "128",
           "Side of the square weight blocks">,
    Option<"promotionInterval", "promotion-interval", "int64_t", "128",
           "Products summed in the GEMM's low-precision accumulator before "
           "promotion to FP32 (N_C)">,
    Option<"powerOfTwoScales", "power-of-two-scales", "bool", "false",
           "Round scales up to powers of two (UE8M0)">,
    ListOption<"highPrecisionRoles", "high-precision-roles", "std::string",
               "Parameter roles of layers kept in float32 "
               "(default: embedding, head, mtp_projection, router)">,
    ListOption<"highPrecision", "high-precision", "std::string",
               "Weight-name substrings of further layers kept in float32">,
    ListOption<"gemms", "gemms", "std::string",
               "GEMMs to run in FP8: any of fprop, dgrad, wgrad (default: all)">,
    Option<"cacheActivations", "cache-activations", "std::string", "\"fp32\"",
           "What the weight-gradient GEMM reads: fp32 activations or their fp8 copies">
  ];
  let dependentDialects = ["::mlir::tensor::TensorDialect"];
}

#endif // DSV3_PASSES_PASSES_TD
