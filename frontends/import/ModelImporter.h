//===- ModelImporter.h - ModelConfig -> dsv3 IR -----------------*- C++ -*-===//
//
// The frontend proper: builds the `dsv3` model-structure IR of a DeepSeek-V3
// family model (main model, MTP depths, losses) for a fixed batch shape.
// Everything after this is passes.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_IMPORT_MODELIMPORTER_H
#define DSV3_FRONTENDS_IMPORT_MODELIMPORTER_H

#include "frontends/model/ModelConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <optional>
#include <vector>

namespace dsv3 {

struct ImportOptions {
  int64_t batch = 1;
  int64_t seqLen = 32;
  /// Packed rows: the entry point takes `segment_ids [batch, seq]` (document
  /// ids) after the tokens; attention stays within a document and losses
  /// skip predictions across document boundaries.
  bool packed = false;
  /// Emit MTP logits/losses when the model has MTP layers.
  bool includeMTP = true;
  /// Emit each MoE layer's chosen experts as an output.
  bool emitRoutingChoices = true;
  /// When set, also emit the training objective
  /// `total_loss = loss + mtpWeight * mtp_loss`.
  std::optional<double> mtpWeight;
  /// With mtpWeight set: weight of the sequence-wise balance loss of every
  /// MoE layer, added to total_loss (0: none).
  double balanceAlpha = 0.0;
  /// Pipeline stages (needs mtpWeight): instead of @forward, one function
  /// per stage, `@stage<k>(ids, [segments], [hidden]) -> (hidden, ...,
  /// total_loss, ...)`: the decoder layers (then the MTP block, as one)
  /// split into contiguous runs; each stage takes the previous one's hidden
  /// state, returns its own (role activation) and its part of total_loss.
  int64_t pipelineStages = 1;
};

/// Builds `func.func @forward(ids) -> (logits, loss, [mtp_logits, mtp_loss],
/// [topk_ids...])`, outputs named by the `dsv3.output` result attribute.
/// Fails with a message when the shape cannot be evaluated (e.g. a sequence
/// too short for the MTP loss, or longer than max_position_embeddings).
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importModel(mlir::MLIRContext &ctx, const ModelConfig &config,
            const ImportOptions &options);

/// The shapes of a generation module's entry points.
struct GenerateShape {
  /// @prefill and @mtp_prefill: `prefillBatch` prompts of `prefillLen`
  /// tokens (shorter prompts are padded at the end: causal attention keeps
  /// the padding out of the real positions).
  int64_t prefillBatch = 1, prefillLen = 16;
  /// Shorter prompt lengths compiled as well, as @prefill_<n> and
  /// @mtp_prefill_<n>: a short prompt is not padded to prefillLen.
  std::vector<int64_t> shorterPrefills;
  /// @decode, @verify and @mtp_step: one row per sequence slot.
  int64_t decodeBatch = 1;
  /// Cache rows per slot: the longest sequence (prompt and generated).
  int64_t capacity = 64;
  /// Tokens per @verify and @mtp_step (1 + draft length); 0 leaves the
  /// speculative entries out (also when the model has no MTP layer).
  int64_t verifyLen = 2;
  /// The cache's element type: BF16 halves its bytes (rows are rounded
  /// when the runtime writes them; attention computes in float32).
  bool cacheBF16 = false;
};

/// Builds the generation entry points over one latent KV cache
/// `kv_cache [layers, decodeBatch, capacity, kv_lora_rank + qk_rope]`
/// (layers: the decoder layers, then the MTP layer when there is one):
///   @prefill(input_ids) -> (logits, [hidden], kv_rows, topk_ids...):
///       the naive MLA form over a prompt from position 0;
///   @decode(input_ids [B,1], positions, kv_cache) -> the same for one new
///       token per slot, absorbed MLA over the cached prefix;
///   @verify: @decode for verifyLen tokens per slot;
///   @mtp_prefill(input_ids, hidden) and @mtp_step(input_ids, hidden,
///       positions, kv_cache) -> (mtp_logits, kv_rows): the MTP layer's
///       draft from the main model's final-normed hidden state at position j
///       and token j+1, with its own cache layer.
/// `kv_rows` holds the steps' new cache rows ([layers, B, T, row]); the
/// runtime owns the cache and writes them at the tokens' positions.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importGenerator(mlir::MLIRContext &ctx, const ModelConfig &config, const GenerateShape &shape);

} // namespace dsv3

#endif // DSV3_FRONTENDS_IMPORT_MODELIMPORTER_H
