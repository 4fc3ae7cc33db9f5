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

} // namespace dsv3

#endif // DSV3_FRONTENDS_IMPORT_MODELIMPORTER_H
