//===- Executor.h - one pipeline rank running its schedule ------*- C++ -*-===//
//
// Part of the runtime core (no LLVM). Runs one rank's program of a
// PipelineSchedule over an Executable compiled with pipeline stages
// (`stage<k>_forward`, `_backward_input`, `_backward_weight`, `_backward`,
// from dsv3-pipeline-partition; an F&B pair as the one function
// dsv3-comm-overlap fused it into, when the module has it). Per (stage, micro-batch) it keeps, by name,
// exactly what the chunks exchange: the received `hidden`, the `saved.<n>`
// values one chunk leaves for a later one, the `grad.hidden` seed; it frees
// them after the micro-batch's last chunk of that stage. Parameter
// gradients accumulate into one flat buffer of the layout (micro-batches
// in schedule order, scaled by 1/N at the end: each micro-batch's loss is
// a mean over its tokens, the step's the mean over micro-batches).
//
// Hidden states and their gradients travel through a PipelineTransport:
// between ranks of an MPI job (runtime/parallel), or between ranks that
// share one process (tests run every rank's program round-robin). A step
// whose input has not arrived yet reports "blocked" instead of waiting, so
// one thread can drive several ranks.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_PIPELINE_EXECUTOR_H
#define DSV3_RUNTIME_PIPELINE_EXECUTOR_H

#include "runtime/comm/Communicator.h"
#include "runtime/exec/Executable.h"
#include "runtime/pipeline/Schedule.h"

#include <chrono>
#include <functional>
#include <map>
#include <memory>

namespace dsv3::rt {

/// What moves between pipeline ranks: float tensors, matched by a tag that
/// names (direction, stage, micro-batch), so order never matters.
class PipelineTransport {
public:
  virtual ~PipelineTransport() = default;
  /// Sends `data` to pipeline rank `to` (the transport keeps it until the
  /// message is out).
  virtual Error send(int to, int64_t tag, std::vector<float> data) = 0;
  /// Fills `data` (already sized) with the message `tag` from `from` if it
  /// has arrived; false if not yet.
  virtual Expected<bool> tryReceive(int from, int64_t tag, std::vector<float> &data) = 0;
  /// Called between steps: lets started transfers move on.
  virtual Error progress() { return Error::success(); }
  /// Called after the last step: waits until this rank's sends completed.
  virtual Error flush() { return Error::success(); }
  /// What moves messages on, for reports ("a progress thread", ...).
  virtual std::string progressMode() const = 0;
};

/// Ranks that share one process: messages wait in a map. (MPI jobs use
/// CommunicatorTransport, CommTransport.h.)
class InProcessTransport {
public:
  explicit InProcessTransport(int ranks);
  ~InProcessTransport();
  /// The endpoint of rank `rank` (valid while this object lives).
  PipelineTransport &endpoint(int rank);

private:
  class Endpoint;
  std::map<std::tuple<int, int, int64_t>, std::vector<float>> mailbox; // (from, to, tag)
  std::vector<std::unique_ptr<Endpoint>> endpoints;
};

/// The token rows of one micro-batch, as the chunks' inputs name them.
using MicroBatchInputs = std::function<std::vector<std::pair<std::string, BufferArg>>(int mb)>;

/// `rows` token sequences (and their segment ids, when packed) as
/// `microBatches` consecutive slices, named as the chunks' inputs are. The
/// arrays must outlive the returned function.
MicroBatchInputs splitRows(const int64_t *ids, const int64_t *segments, int64_t rows,
                           int64_t seqLen, int microBatches);

/// One rank's run of one step's schedule.
class PipelineRank {
public:
  PipelineRank(const PipelineSchedule &schedule, int rank, const Executable &executable,
               float *params, MicroBatchInputs inputs, PipelineTransport &transport);

  enum class Progress { Ran, Blocked, Done };
  /// Runs the next step if its inputs are here.
  Expected<Progress> step();
  /// Runs every step, polling for inputs (other ranks progress elsewhere).
  Error runToEnd();

  /// d(mean over micro-batches of total_loss)/d parameter for the parameters
  /// of this rank's stages (zero elsewhere), after the last step.
  const std::vector<float> &gradients() const { return grads; }
  /// The scalar losses this rank's stages computed, summed over its stages
  /// and averaged over micro-batches (total_loss, loss, mtp_loss,
  /// balance_loss: each stage's part; the job's value is the sum over ranks).
  const std::map<std::string, double> &losses() const { return lossSums; }
  /// Tokens routed to each expert by this rank's stages, summed over the
  /// step's micro-batches, by routing bias (the parameter an `expert_ids`
  /// output names): what auxiliary-loss-free balancing updates from.
  const std::map<std::string, std::vector<int64_t>> &expertLoads() const { return loads; }
  /// Wall time of each step and what it ran, for traces and the bubble.
  struct StepTime {
    double start, end;
    size_t step;
  };
  const std::vector<StepTime> &stepTimes() const { return times; }
  /// Peak bytes held for later chunks (received states, saved values).
  int64_t peakHeldBytes() const { return peakHeld; }
  /// Peak activations in the simulator's units (stage x micro-batch: from
  /// a forward's step to the end of the step of its B or Bi), between
  /// steps and inside one.
  int peakActivationUnits() const { return peakUnits; }
  int peakActivationUnitsInStep() const { return peakUnitsInStep; }
  /// The bytes of one such unit: what a forward of this rank's stages
  /// leaves for its backward (mean over its stages).
  double unitBytes() const;

  /// After the last step, what one process's `forward_grad` returns, under
  /// its names: the scalar losses (summed over the ranks of `pipeline`, so
  /// every stage's part is in) and every parameter's gradient (this rank's
  /// stages; runtime/parallel's reduceGradients adds the other ranks').
  /// Every rank of `pipeline` must call it.
  Error stepOutputs(Communicator &pipeline, EntryPoint &entry,
                    std::unique_ptr<OutputBuffers> &buffers) const;

  /// After the last step, every rank's busy time and measured bubble
  /// (makespan - busy; the ranks started together `elapsed` seconds ago on
  /// this rank) beside the simulator's replay of the schedule with the
  /// measured chunk costs (meanCostsByKind), and its peak activations
  /// (units and bytes) beside the simulator's and the formula, as lines to
  /// print. Every rank of `pipeline` must call it.
  Expected<std::string> measuredBubbles(Communicator &pipeline, double elapsed) const;
  /// After the last step, every rank's steps as they ran (milliseconds from
  /// `origin`, when the ranks started together), drawn as an SVG picture
  /// (TimelineSvg.h). Every rank of `pipeline` must call it; each gets the
  /// picture.
  Expected<std::string> executedTimelineSvg(Communicator &pipeline,
                                            std::chrono::steady_clock::time_point origin) const;

private:
  using Store = std::map<std::string, HostTensor>;
  Expected<bool> ready(const Chunk &chunk);
  /// A chunk an entry point computes, and the prefix of its argument and
  /// result names there ("" alone, "forward."/"backward." in a fused pair).
  struct ChunkCall {
    Chunk chunk;
    std::string prefix;
  };
  /// Calls `entry` with the chunks' inputs and files their results.
  Error run(const std::string &entry, const std::vector<ChunkCall> &calls);
  int64_t tagOf(bool gradient, int stage, int mb) const;
  void release(int stage, int mb);

  const PipelineSchedule &schedule;
  int rank;
  const Executable &executable;
  float *params;
  MicroBatchInputs inputs;
  PipelineTransport &transport;
  size_t next = 0;
  std::map<std::pair<int, int>, Store> held; // (stage, mb) -> values by name
  int64_t heldBytes = 0, peakHeld = 0;
  int liveUnits = 0, peakUnits = 0, peakUnitsInStep = 0;
  std::vector<float> grads;
  std::map<std::string, double> lossSums;
  std::map<std::string, std::vector<int64_t>> loads;
  std::vector<StepTime> times;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_PIPELINE_EXECUTOR_H
