//===- Simulator.h - time, bubbles and activation memory of a schedule -*- C++ -*-===//
//
// Part of the runtime core (no LLVM). Replays a PipelineSchedule with given
// chunk costs, as its ranks would run it: each rank runs its steps in
// order, a step starts when the rank is free and its inputs have arrived
// (the producer's finish plus `comm` when it ran on another rank), an F&B
// pair starts when both halves can. Sends never block (the executor posts
// them and completes them later), so a schedule that cannot finish here
// deadlocks for real: simulate() names the rank and step that wait forever.
//
// The same replay answers three questions: the bubble of each rank
// (makespan - busy time), the peak of live activations in micro-batch
// units (F allocates one stage's activations at its start, B or Bi frees
// them at its end; W's remainders are not counted, as in the reference
// analysis), and, fed with measured chunk costs, the prediction a measured
// run is compared against.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_PIPELINE_SIMULATOR_H
#define DSV3_RUNTIME_PIPELINE_SIMULATOR_H

#include "runtime/pipeline/Schedule.h"

#include <functional>

namespace dsv3::rt {

/// Time of each chunk kind, in any unit. B is the full backward, W its
/// weight-gradient part (so Bi costs B - W); an F&B pair costs F + B
/// unless `overlapped` is set; `comm` is the latency of one message
/// between ranks.
struct ChunkCosts {
  double forward = 1, backward = 2, weight = 1, overlapped = -1, comm = 0;
  double backwardInput() const { return backward - weight; }
  double pair() const { return overlapped >= 0 ? overlapped : forward + backward; }
  double of(const ScheduleStep &step) const;
};

/// Parses "F=1,B=2,W=1,FB=3,comm=0" (any subset; the rest keep their
/// defaults), or says which entry is wrong.
Expected<ChunkCosts> parseChunkCosts(std::string_view text);

struct SimulatedStep {
  double start = 0, end = 0;
};

struct SimulatedRank {
  std::vector<SimulatedStep> steps;
  double busy = 0;
  /// makespan - busy: the time this rank waits, start and end included.
  double bubble = 0;
  /// Peak live activations between steps, and inside a step (an F&B pair
  /// holds its forward's before its backward frees one).
  int peakActivations = 0, peakActivationsInStep = 0;
};

struct Simulation {
  std::vector<SimulatedRank> ranks;
  double makespan = 0;
  /// Messages between ranks (stage-boundary activations and gradients).
  int messages = 0;
  double worstBubble() const;
};

/// The cost of one step of one rank, for costs that differ by stage.
using StepCost = std::function<double(int rank, const ScheduleStep &step)>;

/// Replays `schedule`; each step costs `costs.of(step)`, or `stepCost` when
/// given (messages still take `costs.comm`).
Expected<Simulation> simulate(const PipelineSchedule &schedule, const ChunkCosts &costs,
                              const StepCost &stepCost = nullptr);

/// Costs from a measured run: for each kind of step (the pass and stage of
/// each chunk, e.g. every "F of stage 2" or every "F of stage 0 & B of
/// stage 3"), the mean of its measured durations `durations[rank][step]`.
/// Stages differ (the first embeds, the last ends in the head and the
/// loss), so one mean per pass would mispredict the waits between them.
StepCost meanCostsByKind(const PipelineSchedule &schedule,
                         const std::vector<std::vector<double>> &durations);

/// The bubble per rank the DualPipe README's formula gives for these costs
/// (absolute time, with PP = the number of stages): 1f1b (PP-1)(F+B), zb1p
/// (PP-1)(F+B-2W), DualPipe(V) (PP/2-1)(F&B+B-3W). It assumes Bi ~ W ~ F;
/// the simulator is the reference, the formula is printed beside it.
double bubbleFormula(const PipelineSchedule &schedule, const ChunkCosts &costs);
/// Peak activations per rank of the same table: PP, or PP+1 for DualPipe(V).
int activationFormula(const PipelineSchedule &schedule);

/// One line per rank, one character per time unit (F, B, W; '.' idle), or
/// an empty string when the costs are not whole multiples of one unit or
/// the picture would be wider than `maxWidth`.
std::string formatTimeline(const PipelineSchedule &schedule, const Simulation &sim,
                           const ChunkCosts &costs, int maxWidth = 240);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_PIPELINE_SIMULATOR_H
