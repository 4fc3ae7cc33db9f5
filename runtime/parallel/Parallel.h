//===- Parallel.h - one job's ranks and what they share --------*- C++ -*-===//
//
// Part of the runtime core (no LLVM). A job of dp x pp x ep ranks runs one
// compiled program per rank:
//   - world rank w = (d * pp + p) * ep + e: replica (data-parallel index)
//     d, pipeline rank p, expert-parallel index e, so the expert group of
//     one pipeline rank of one replica are neighbours (one node, as
//     DeepSeek-V3 places its expert groups);
//   - the ranks of replica d share its block of the batch; those with the
//     same (d, p) form the "expert" group, the same (p, e) the "data"
//     group, the same (d, e) the "pipeline" group, along which a
//     micro-batch's hidden states travel from stage to stage;
//   - parameters are replicated, except routed experts, which rank e of
//     each replica holds block e of (ParamSlot::shard); a pipeline rank
//     computes the gradients of its stages only.
// Compiled code reaches the groups by name through runtime/comm/Groups.h;
// this file splits the world into them, picks each rank's batch rows and
// expert blocks, and turns per-rank outputs into what one process would
// have computed (summed gradients, averaged losses, gathered rows).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_PARALLEL_PARALLEL_H
#define DSV3_RUNTIME_PARALLEL_PARALLEL_H

#include "runtime/abi/Abi.h"
#include "runtime/comm/Communicator.h"

#include <chrono>
#include <memory>
#include <vector>

namespace dsv3::rt {

/// Group sizes of a job: data x expert x pipeline ranks.
struct ParallelPlan {
  int64_t data = 1, expert = 1, pipeline = 1;
  /// Node-limited routing: a replica's experts spread over routingNodes
  /// nodes, each token's from at most maxNodesPerToken (0: no limit).
  int64_t routingNodes = 1, maxNodesPerToken = 0;
  int64_t ranks() const { return data * expert * pipeline; }
  bool single() const { return ranks() == 1; }
};

/// The world and the groups carved from it, registered for compiled code
/// while this object lives.
class ProcessGroups {
public:
  /// Splits `world` by `plan` (every rank must call it with the same plan;
  /// the caller checked that the plan fits the world and the model).
  static Expected<std::unique_ptr<ProcessGroups>> create(std::unique_ptr<Communicator> world,
                                                        const ParallelPlan &plan);
  ~ProcessGroups();

  const ParallelPlan &plan() const { return plan_; }
  Communicator &world() { return *world_; }
  Communicator &data() { return *data_; }
  Communicator &expert() { return *expert_; }
  Communicator &pipeline() { return *pipeline_; }
  int64_t dataRank() const { return data_->rank(); }
  int64_t expertRank() const { return expert_->rank(); }
  int64_t pipelineRank() const { return pipeline_->rank(); }
  bool isRoot() const { return world_->rank() == 0; }
  /// All-to-all bytes and time inside communication so far, over this
  /// rank's groups.
  CommStats commTotals() const;

private:
  ProcessGroups() = default;
  ParallelPlan plan_;
  std::unique_ptr<Communicator> world_, data_, expert_, pipeline_;
};

/// Rows [d * B / dp, (d + 1) * B / dp) of a [B, T] batch, for replica d.
std::vector<int64_t> replicaRows(const std::vector<int64_t> &batch, int64_t rows, int64_t cols,
                                 const ProcessGroups &groups);

/// Turns this rank's gradients `grads` (the flat buffer, in layout order)
/// into the job's: each parameter's gradient summed over the ranks that
/// hold it (replicated parameters: the world; expert blocks: the data and
/// pipeline groups; with pp > 1 the pipeline group first adds the stages'
/// parts, zero where a rank does not run the stage) and divided by dp x
/// ep, since each replica's loss is a mean over its rows and each of its
/// ep ranks differentiates all of it.
/// `out` receives the slice of `shard`: with one shard the whole buffer
/// (all-reduce over the data group), with dp shards (ZeRO-1) this rank's
/// slice only (reduce-scatter over the data group; `grads` is padded to
/// dp slices). Either way the replicated part of the slice is then summed
/// over the expert group. Returns the square of the job's gradient norm,
/// each value counted once.
Expected<double> reduceGradients(ProcessGroups &groups, const ParamLayout &layout,
                                 const OptimizerShard &shard, std::vector<float> &grads,
                                 std::vector<float> &out);

/// Turns this rank's outputs of `entry` into those of the whole job, on
/// every rank: gradients as reduceGradients says (expert blocks then
/// concatenated over the expert group), losses averaged over replicas,
/// per-token outputs (logits, expert choices) concatenated over replicas.
/// `global` receives the job-wide signature and `buffers` its values.
Error gatherOutputs(const EntryPoint &entry, OutputBuffers &local, const ParamLayout &layout,
                    ProcessGroups &groups, EntryPoint &global,
                    std::unique_ptr<OutputBuffers> &buffers);

/// Each rank's expert all-to-alls since `before` (its commTotals() then):
/// how many, their time in flight and the part exposed (blocked in wait;
/// compute ran during the rest), as lines for rank 0 to print, with the
/// job's hidden share. Every rank must call it.
Expected<std::string> allToAllReport(ProcessGroups &groups, const CommStats &before);

/// Every rank of `groups` (one process: null) learns whether any rank
/// failed; a barrier as well. A rank that did not fail reports `what` as
/// failed on another rank (the failing one keeps its own message). With a
/// `poll` period the wait sleeps between tests instead of spinning (for
/// long waits on shared cores, such as other ranks compiling).
Error agreeAcrossRanks(ProcessGroups *groups, Error local, const std::string &what,
                       std::chrono::milliseconds poll = std::chrono::milliseconds(0));

/// Starts recording a trace on this rank (every rank of `groups`, or one
/// process when it is null), all from one origin taken after a barrier.
Error startJobTrace(ProcessGroups *groups);

/// Writes every rank's spans to `path` as one Chrome/Perfetto trace: a
/// process per rank, a compute and a communication lane each. Ranks
/// leave their spans beside `path`; rank 0 merges them. Every rank must
/// call it and gets the same outcome.
Error writeJobTrace(const std::string &path, ProcessGroups *groups);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_PARALLEL_PARALLEL_H
