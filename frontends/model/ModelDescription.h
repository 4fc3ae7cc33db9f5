//===- ModelDescription.h - model dir or .toml description ------*- C++ -*-===//
//
// A model is given either as a directory holding a hub config.json (and its
// safetensors weights) or as a native TOML description:
//
//   [model]
//   config = "config.json"         # hub config.json, relative to this file...
//   weights = "model.safetensors"  # file or directory, relative to this file
//   # ...or the architecture inline, with hub config.json keys:
//   # [model.architecture]
//   # hidden_size = 256
//
//   [init]        # optional, instead of model.weights: seeded random weights
//   seed = 0
//
//   [train]       # optional; keys and their defaults:
//   #   steps 0, batch_size 0, seq_len 0 (at most max_position_embeddings),
//   #   seed 0, lr 0, warmup_steps 0, weight_decay 0.1, betas [0.9, 0.95],
//   #   eps 1e-8, grad_clip 1.0 (0 = off), mtp_weight 0.3,
//   #   balance_alpha 1e-4, bias_update_speed 1e-3
//   steps = 100
//   lr = 1e-3
//
//   [fp8]         # optional; defaults shown
//   enabled = false
//   format = "e4m3"
//   activation_tile = 128
//   weight_block = 128
//   promotion_interval = 128
//   power_of_two_scales = false
//   cache_activations = "fp32"   # or "fp8"
//
//   [parallel]    # optional: how ranks split the work (mpirun -np R with
//   data = 1      #   R = data * expert * pipeline)
//   expert = 1    # experts per rank: n_routed_experts / expert
//   pipeline = 1
//   ranks_per_node = 0        # 0: every rank on one node
//   max_nodes_per_token = 0   # node-limited routing (DeepSeek-V3: 4); 0: off
//
// Exactly one of model.config and [model.architecture]; exactly one of
// model.weights and [init]. Unknown tables and keys are errors.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_MODEL_MODELDESCRIPTION_H
#define DSV3_FRONTENDS_MODEL_MODELDESCRIPTION_H

#include "frontends/model/ModelConfig.h"

#include <array>
#include <optional>
#include <string>

namespace dsv3 {

/// [train]: recipe values kept for the training driver. Defaults follow the
/// DeepSeek-V3 recipe where it states one (AdamW betas, decay, clipping, MTP
/// weight, balance alpha, bias update speed).
struct TrainSettings {
  int64_t steps = 0, batchSize = 0, seqLen = 0, seed = 0, warmupSteps = 0;
  double lr = 0, weightDecay = 0.1, eps = 1e-8, gradClip = 1.0;
  std::array<double, 2> betas = {0.9, 0.95};
  double mtpWeight = 0.3;        // lambda of the MTP loss
  double balanceAlpha = 1e-4;    // sequence-wise balance loss weight
  double biasUpdateSpeed = 1e-3; // gamma of the routing-bias update
};

/// [fp8]: tile-wise FP8 training (1x128 activation tiles, 128x128 weight
/// blocks, E4M3, FP32 promotion every 128 products along K).
struct FP8Settings {
  bool enabled = false;
  std::string format = "e4m3";
  int64_t activationTile = 128, weightBlock = 128, promotionInterval = 128;
  bool powerOfTwoScales = false;
  std::string cacheActivations = "fp32";
};

/// [parallel]: the parallel plan. Launch-time checks (the world size, the
/// batch split) happen where the ranks are known.
struct ParallelSettings {
  int64_t data = 1, expert = 1, pipeline = 1;
  int64_t ranksPerNode = 0;     // 0: all ranks share one node
  int64_t maxNodesPerToken = 0; // 0: routing is not node-limited
  int64_t ranks() const { return data * expert * pipeline; }
};

/// Fails (naming `source`) when `plan` does not divide `config`: the routed
/// experts over the expert ranks, the layers over the pipeline stages, the
/// ranks over nodes.
llvm::Error checkParallelPlan(const ModelConfig &config, const ParallelSettings &plan,
                              llvm::StringRef source);

struct ModelDescription {
  std::string path; // the .toml or directory given
  ModelConfig config;
  /// File or directory for WeightStore::open; empty when initSeed is set.
  std::string weightsPath;
  std::optional<uint64_t> initSeed;
  /// A .toml description carries a training recipe (`train`, its defaults
  /// where [train] is silent); a bare hub directory carries none.
  bool hasRecipe = false;
  TrainSettings train;
  FP8Settings fp8;
  ParallelSettings parallel;
};

/// MODEL is a directory holding config.json (+ weights) or a .toml description.
llvm::Expected<ModelDescription> loadModelDescription(llvm::StringRef path);

} // namespace dsv3

#endif // DSV3_FRONTENDS_MODEL_MODELDESCRIPTION_H
