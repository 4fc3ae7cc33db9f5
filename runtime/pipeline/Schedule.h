//===- Schedule.h - pipeline schedules: what each rank runs, in order -*- C++ -*-===//
//
// Part of the runtime core (plain C++, no LLVM), shared with the compiler:
// `dsv3-pipeline-partition` emits a schedule from here as IR, the executor
// runs it, `dsv3c schedule` prints and simulates it.
//
// A schedule places S model stages on P pipeline ranks and lists, per rank,
// the chunks it runs in order: F (forward of one stage for one micro-batch),
// B (its full backward), Bi (input gradient only) and W (the weight gradient
// of an earlier Bi), or an F&B pair handed together to the overlapped
// executor. Four generators:
//   1f1b       stage r on rank r; warm-up forwards, then one F one B;
//   zb1p       as 1f1b with B split into Bi and W, rank r holding back up
//              to P-1-r W's to fill its cool-down (zero-bubble ZB-H1);
//   dualpipe   P stages each on two ranks (r and P-1-r); micro-batches
//              0..N/2-1 enter at rank 0, N/2..N-1 at rank P-1;
//   dualpipev  2P stages, rank r holds stages r and 2P-1-r (a "V").
// The DualPipe(V) generators follow DeepSeek's reference step() phase by
// phase (sections S1..S8); tests/unit/runtime/pipeline checks them against
// its per-rank tables.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_PIPELINE_SCHEDULE_H
#define DSV3_RUNTIME_PIPELINE_SCHEDULE_H

#include "runtime/support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::rt {

enum class ScheduleKind { OneFOneB, ZeroBubble, DualPipe, DualPipeV };

/// "1f1b", "zb1p", "dualpipe", "dualpipev".
const char *scheduleName(ScheduleKind kind);
std::optional<ScheduleKind> parseScheduleKind(std::string_view name);

/// What one chunk computes for its stage and micro-batch.
enum class ChunkPass : uint8_t {
  Forward,        // F
  Backward,       // B: input and weight gradients
  BackwardInput,  // Bi: input gradient; the weight gradient waits for a W
  BackwardWeight, // W: the weight gradient of the oldest pending Bi
};

struct Chunk {
  ChunkPass pass;
  int stage;
  int microBatch;
};

/// One step of a rank's program: a chunk, or an F&B pair (forward first).
struct ScheduleStep {
  Chunk chunk;
  std::optional<Chunk> overlappedBackward;
  /// The section of the generator the step comes from (1-based: S1..S8 for
  /// DualPipe(V); warm-up, steady, cool-down for 1f1b and zb1p).
  int section = 1;
};

struct PipelineSchedule {
  ScheduleKind kind;
  int ranks = 0, stages = 0, microBatches = 0;
  /// Each rank's steps in program order.
  std::vector<std::vector<ScheduleStep>> steps;

  /// The rank that runs stage `stage` for micro-batch `mb` (DualPipe keeps
  /// a copy of every stage on two ranks; the micro-batch picks one).
  int rankOf(int stage, int microBatch) const;
  /// The stages rank `rank` holds parameters for (one, or two).
  std::vector<int> stagesOn(int rank) const;
  /// Sections per rank of the generator (8 for DualPipe(V), else 3).
  int sections() const;
  /// The micro-batches per forward direction (DualPipe: N/2, else N).
  int microBatchesPerDirection() const;
};

/// A value one stage's chunk computes for another stage's chunk of the same
/// micro-batch: a forward's output hidden state ("hidden") for stage s+1,
/// or a backward's input gradient ("grad.hidden") for stage s-1, where it
/// seeds that stage's backward.
struct StageMessage {
  bool gradient = false;
  int from = 0, to = 0; ///< stages
  int microBatch = 0;
  const char *value() const { return gradient ? "grad.hidden" : "hidden"; }
};

/// What `chunk` reads from another stage: F from s-1, B and Bi from s+1;
/// none for stage 0's F, the last stage's B, or a W. The one rule the
/// schedule IR, the executor and the simulator share; the message crosses
/// ranks when `rankOf` differs at its two ends.
std::optional<StageMessage> stageInput(const PipelineSchedule &schedule, const Chunk &chunk);
/// What `chunk` computes for another stage (the mirror of stageInput).
std::optional<StageMessage> stageOutput(const PipelineSchedule &schedule, const Chunk &chunk);

/// "F", "B", "Bi", "W", and back.
const char *passLabel(ChunkPass pass);
std::optional<ChunkPass> parsePassLabel(std::string_view text);

/// The function dsv3-pipeline-partition outlines for `chunk`:
/// "stage<k>_forward", "_backward", "_backward_input", "_backward_weight".
std::string chunkFunction(const Chunk &chunk);
/// The function dsv3-comm-overlap fuses an F&B pair into (when the module
/// has expert exchanges to overlap): "<forward>_and_<backward>".
std::string pairFunction(const Chunk &forward, const Chunk &backward);

/// Builds `kind`'s schedule for `ranks` pipeline ranks and `microBatches`
/// micro-batches, or says which precondition fails (DualPipe: P and N even,
/// N >= 2P; DualPipeV: N >= 2P; 1f1b/zb1p: N >= 1).
Expected<PipelineSchedule> buildSchedule(ScheduleKind kind, int ranks, int microBatches);

/// Checks what any schedule must satisfy to run: every (stage, micro-batch)
/// has exactly one F and one backward (B, or Bi and W) on the rank that
/// holds it; F(s,m) comes before B(s,m) on its rank and Bi before its W;
/// each W pops the oldest pending Bi of its rank; per (stage, direction),
/// micro-batches go through in order. Messages are checked by simulating
/// (Simulator.h).
Error validateSchedule(const PipelineSchedule &schedule);

/// A chunk in the notation of the reference tables: F5, B5, Bi5, W5 (one
/// stage per rank) or F5a/F5b (DualPipeV: a = stage r, b = stage 2P-1-r).
std::string chunkLabel(const PipelineSchedule &schedule, int rank, const Chunk &chunk);
/// "F3&B5" for a pair, else the chunk's label.
std::string stepLabel(const PipelineSchedule &schedule, int rank, const ScheduleStep &step);

/// The per-rank table: one row per rank, one column per section, cells of
/// space-separated step labels ("–" when empty), as Markdown.
std::string formatScheduleTable(const PipelineSchedule &schedule);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_PIPELINE_SCHEDULE_H
