//===- Session.h - the state a program keeps between compiled calls -*- C++ -*-===//
//
// Part of the execution layer (no LLVM). A session owns what lives across
// calls of compiled code: the flat parameter buffer, the optimizer state
// (AdamW moments, double-buffered so that a step writes the next state
// while reading the current one) and, for each entry point, its output
// buffers, allocated once from the entry's signature and overwritten by
// every call. A generation's latent KV cache is not here: it belongs to the
// generator that owns the sequences (runtime/generate/LatentCache.h) and is
// passed to decode steps as an argument. Executables are borrowed: they
// must outlive the session.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_EXEC_SESSION_H
#define DSV3_RUNTIME_EXEC_SESSION_H

#include "runtime/exec/Executable.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dsv3::rt {

/// AdamW's first and second moments, one element per parameter of the
/// optimizer shard, stored as the compiled step's signature says (f32, or
/// bf16 as raw bits).
struct MomentState {
  ElementType type = ElementType::F32;
  std::vector<uint8_t> m, v;
  size_t elementSize() const { return rt::elementSize(type); }
};

class Session {
public:
  /// A session over `model` (its forward or forward_grad) and, when
  /// training, `optimizer` (an executable with adamw_step over the
  /// parameters of `shard`; it may be `model` itself). Parameters start at
  /// zero.
  static Expected<std::unique_ptr<Session>> create(const Executable &model,
                                                   const Executable *optimizer = nullptr,
                                                   OptimizerShard shard = {});

  /// The model's parameter layout, with this rank's expert blocks placed
  /// (placeExperts).
  const ParamLayout &layout() const { return layout_; }
  /// Marks the session's expert-sharded slots as expert-parallel rank
  /// `expertRank`'s blocks (what checkpoints name them by).
  void placeExperts(int64_t expertRank) { placeShards(layout_, expertRank); }
  const Executable &executable() const { return model; }
  /// The flat parameter buffer (layout().totalElements floats).
  std::vector<float> &parameters() { return params; }

  /// Calls `entry` with the parameters and `inputs`; its results stay in
  /// outputs(entry) until the entry runs again.
  Error run(const std::string &entry, const std::vector<BufferArg> &inputs);
  /// The output buffers of `entry` (allocated on first use).
  OutputBuffers &outputs(const std::string &entry);

  bool trains() const { return optimizer != nullptr; }
  const OptimizerShard &shard() const { return shard_; }
  MomentState &moments() { return current; }

  /// One compiled AdamW step on `grads` (one per element of the shard,
  /// padding included) with the hyper-parameters `hyper` (AdamWHyper
  /// slots): the shard's parameters and moments move on, the rest of the
  /// buffer is left to whoever owns it. Parameters with the role
  /// routing_bias keep their values and zero moments: they follow the
  /// load-balancing rule, not the gradient.
  Error optimizerStep(const std::vector<float> &grads, const float *hyper);
  /// The shard's parameters after the last optimizerStep, padding included
  /// (what a data-parallel job all-gathers).
  const std::vector<float> &shardParameters() const {
    return shard_.count == 1 ? params : shardParams;
  }

private:
  Session(const Executable &model, const Executable *optimizer, OptimizerShard shard,
          ElementType momentType);

  const Executable &model;
  const Executable *optimizer;
  ParamLayout layout_;
  OptimizerShard shard_;
  std::vector<float> params;
  /// The step's output, and with several shards the padded copy of this
  /// one's slice (the step's input, then its result).
  std::vector<float> nextParams, shardParams;
  MomentState current, next;
  std::map<std::string, std::unique_ptr<OutputBuffers>> results;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_EXEC_SESSION_H
