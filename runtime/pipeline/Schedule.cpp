//===- Schedule.cpp - the four pipeline schedule generators ---------------===//
//
// Generators (1f1b, zb1p, DualPipe, DualPipeV), the structural check every
// schedule must pass before it runs, and the table printer. The DualPipe(V)
// generator is one function of (V, P, N, rank) over "local phases" 0 and 1,
// as DeepSeek's reference step() is; phases map to stages and micro-batch
// counters afterwards.
//
//===----------------------------------------------------------------------===//
#include "runtime/pipeline/Schedule.h"

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <set>

namespace dsv3::rt {

const char *scheduleName(ScheduleKind kind) {
  switch (kind) {
  case ScheduleKind::OneFOneB:
    return "1f1b";
  case ScheduleKind::ZeroBubble:
    return "zb1p";
  case ScheduleKind::DualPipe:
    return "dualpipe";
  case ScheduleKind::DualPipeV:
    return "dualpipev";
  }
  return "?";
}

std::optional<ScheduleKind> parseScheduleKind(std::string_view name) {
  for (ScheduleKind k : {ScheduleKind::OneFOneB, ScheduleKind::ZeroBubble,
                         ScheduleKind::DualPipe, ScheduleKind::DualPipeV})
    if (name == scheduleName(k))
      return k;
  return std::nullopt;
}

std::string chunkFunction(const Chunk &c) {
  std::string stage = "stage" + std::to_string(c.stage);
  switch (c.pass) {
  case ChunkPass::Forward:
    return stage + "_forward";
  case ChunkPass::Backward:
    return stage + "_backward";
  case ChunkPass::BackwardInput:
    return stage + "_backward_input";
  case ChunkPass::BackwardWeight:
    return stage + "_backward_weight";
  }
  return "";
}

std::string pairFunction(const Chunk &forward, const Chunk &backward) {
  return chunkFunction(forward) + "_and_" + chunkFunction(backward);
}

namespace {

/// F (+1: to the next stage), B or Bi (-1: to the previous one), W (0).
int direction(ChunkPass pass) {
  switch (pass) {
  case ChunkPass::Forward:
    return 1;
  case ChunkPass::Backward:
  case ChunkPass::BackwardInput:
    return -1;
  case ChunkPass::BackwardWeight:
    return 0;
  }
  return 0;
}

} // namespace

std::optional<StageMessage> stageInput(const PipelineSchedule &schedule, const Chunk &c) {
  int d = direction(c.pass);
  int from = c.stage - d;
  if (d == 0 || from < 0 || from >= schedule.stages)
    return std::nullopt;
  return StageMessage{d < 0, from, c.stage, c.microBatch};
}

std::optional<StageMessage> stageOutput(const PipelineSchedule &schedule, const Chunk &c) {
  int d = direction(c.pass);
  int to = c.stage + d;
  if (d == 0 || to < 0 || to >= schedule.stages)
    return std::nullopt;
  return StageMessage{d < 0, c.stage, to, c.microBatch};
}

int PipelineSchedule::rankOf(int stage, int microBatch) const {
  switch (kind) {
  case ScheduleKind::OneFOneB:
  case ScheduleKind::ZeroBubble:
    return stage;
  case ScheduleKind::DualPipe:
    // Direction 0 (the first half of the micro-batches) enters at rank 0.
    return microBatch < microBatches / 2 ? stage : ranks - 1 - stage;
  case ScheduleKind::DualPipeV:
    return stage < ranks ? stage : 2 * ranks - 1 - stage;
  }
  return -1;
}

std::vector<int> PipelineSchedule::stagesOn(int rank) const {
  switch (kind) {
  case ScheduleKind::OneFOneB:
  case ScheduleKind::ZeroBubble:
    return {rank};
  case ScheduleKind::DualPipe:
    if (rank == ranks - 1 - rank)
      return {rank};
    return {std::min(rank, ranks - 1 - rank), std::max(rank, ranks - 1 - rank)};
  case ScheduleKind::DualPipeV:
    return {rank, 2 * ranks - 1 - rank};
  }
  return {};
}

int PipelineSchedule::sections() const {
  return kind == ScheduleKind::DualPipe || kind == ScheduleKind::DualPipeV ? 8 : 3;
}

int PipelineSchedule::microBatchesPerDirection() const {
  return kind == ScheduleKind::DualPipe ? microBatches / 2 : microBatches;
}

namespace {

/// Builds one rank's steps, turning (local phase, pass) into (stage,
/// micro-batch): each (phase, F) and (phase, backward) has its own counter,
/// and W pops the oldest Bi.
class RankProgram {
public:
  RankProgram(const PipelineSchedule &s, int rank) : s(s), rank(rank) {}

  void forward(int phase) { emit(next(phase, ChunkPass::Forward)); }
  void backward(int phase, bool inputOnly) {
    Chunk c = next(phase, inputOnly ? ChunkPass::BackwardInput : ChunkPass::Backward);
    if (inputOnly)
      pendingWeight.push_back(c);
    emit(c);
  }
  void weight() {
    Chunk c = pendingWeight.front();
    pendingWeight.pop_front();
    c.pass = ChunkPass::BackwardWeight;
    emit(c);
  }
  void overlapped(int forwardPhase, int backwardPhase) {
    Chunk f = next(forwardPhase, ChunkPass::Forward);
    Chunk b = next(backwardPhase, ChunkPass::Backward);
    steps.push_back({f, b, section});
  }
  size_t pendingWeights() const { return pendingWeight.size(); }

  int section = 1;
  std::vector<ScheduleStep> steps;

private:
  /// The stage and micro-batch of the next chunk of `phase`.
  Chunk next(int phase, ChunkPass pass) {
    int &counter = pass == ChunkPass::Forward ? forwardCount[phase] : backwardCount[phase];
    int index = counter++;
    switch (s.kind) {
    case ScheduleKind::DualPipe: {
      int direction = phase ^ (rank >= s.ranks / 2 ? 1 : 0);
      int stage = direction == 0 ? rank : s.ranks - 1 - rank;
      return {pass, stage, direction * (s.microBatches / 2) + index};
    }
    case ScheduleKind::DualPipeV:
      return {pass, phase == 0 ? rank : 2 * s.ranks - 1 - rank, index};
    default:
      return {pass, rank, index};
    }
  }
  void emit(Chunk c) { steps.push_back({c, std::nullopt, section}); }

  const PipelineSchedule &s;
  int rank;
  int forwardCount[2] = {0, 0}, backwardCount[2] = {0, 0};
  std::deque<Chunk> pendingWeight;
};

/// DeepSeek's DualPipe / DualPipeV step(), section by section, for one rank.
std::vector<ScheduleStep> dualPipeRank(const PipelineSchedule &s, int r) {
  bool v = s.kind == ScheduleKind::DualPipeV;
  int P = s.ranks, N = s.microBatches;
  int H = v ? P : P / 2;                        // half-pipeline length
  int h = v ? r : std::min(r, P - 1 - r);       // distance from the injecting end
  int n = v ? N : N / 2;                        // micro-batches per phase
  bool turning = v ? r == P - 1 : (r == P / 2 - 1 || r == P / 2);
  RankProgram p(s, r);
  auto repeat = [](int times, auto body) {
    for (int i = 0; i < times; ++i)
      body();
  };
  p.section = 1; // S1: forwards of phase 0 fill the pipeline
  repeat(2 * (H - h - 1), [&] { p.forward(0); });
  p.section = 2; // S2: forwards of both phases
  repeat(h + 1, [&] {
    p.forward(0);
    p.forward(1);
  });
  p.section = 3; // S3: zero-bubble start of phase 1's backwards
  repeat(H - h - 1, [&] {
    p.backward(1, /*inputOnly=*/true);
    p.weight();
    p.forward(1);
  });
  p.section = 4; // S4: the steady state, F&B pairs
  for (int i = 0; i < n - 2 * H + h + 1; ++i) {
    if (i == 0 && turning) {
      // The reference does not overlap the first pair on the turning
      // rank(s) "to reduce bubble".
      p.forward(0);
      p.backward(1, false);
    } else {
      p.overlapped(0, 1);
    }
    p.overlapped(1, 0);
  }
  p.section = 5; // S5: phase 1's backwards catch up
  repeat(H - h - 1, [&] {
    p.backward(1, false);
    p.overlapped(1, 0);
  });
  p.section = 6; // S6: backwards of both phases, the second half zero-bubble
  bool inputOnly = false;
  for (int i = 0; i <= h; ++i) {
    if (i == (h + 1) / 2 && h % 2 == 1)
      inputOnly = true;
    p.backward(1, inputOnly);
    if (i == (h + 1) / 2 && h % 2 == 0)
      inputOnly = true;
    p.backward(0, inputOnly);
  }
  p.section = 7; // S7: weight gradients interleaved with the last backwards
  repeat(H - h - 1, [&] {
    p.weight();
    p.backward(0, true);
  });
  p.section = 8; // S8: the remaining weight gradients
  repeat(h + 1, [&] { p.weight(); });
  return std::move(p.steps);
}

/// 1F1B, or with `zeroBubble` ZB-H1: B split into Bi and W, rank r keeping
/// up to r weight gradients pending in the steady state (so its cool-down,
/// where it would wait for the ranks below, runs them).
std::vector<ScheduleStep> oneFOneBRank(const PipelineSchedule &s, int r, bool zeroBubble) {
  int P = s.ranks, N = s.microBatches;
  int warmup = std::min(P - 1 - r, N);
  RankProgram p(s, r);
  auto backward = [&] {
    p.backward(0, zeroBubble);
    while (zeroBubble && p.pendingWeights() > static_cast<size_t>(r))
      p.weight();
  };
  p.section = 1;
  for (int i = 0; i < warmup; ++i)
    p.forward(0);
  p.section = 2;
  for (int i = 0; i < N - warmup; ++i) {
    p.forward(0);
    backward();
  }
  p.section = 3;
  for (int i = 0; i < warmup; ++i)
    backward();
  while (p.pendingWeights())
    p.weight();
  return std::move(p.steps);
}

} // namespace

const char *passLabel(ChunkPass pass) {
  switch (pass) {
  case ChunkPass::Forward:
    return "F";
  case ChunkPass::Backward:
    return "B";
  case ChunkPass::BackwardInput:
    return "Bi";
  case ChunkPass::BackwardWeight:
    return "W";
  }
  return "?";
}

std::optional<ChunkPass> parsePassLabel(std::string_view text) {
  for (ChunkPass pass : {ChunkPass::Forward, ChunkPass::Backward, ChunkPass::BackwardInput,
                         ChunkPass::BackwardWeight})
    if (text == passLabel(pass))
      return pass;
  return std::nullopt;
}

Expected<PipelineSchedule> buildSchedule(ScheduleKind kind, int ranks, int microBatches) {
  std::string name = scheduleName(kind);
  auto failure = [&](const std::string &why) {
    return Error::failure("schedule " + name + " with " + std::to_string(ranks) +
                          " ranks and " + std::to_string(microBatches) +
                          " micro-batches: " + why);
  };
  if (ranks < 1 || microBatches < 1)
    return failure("needs at least one rank and one micro-batch");
  switch (kind) {
  case ScheduleKind::DualPipe:
    if (ranks % 2 || microBatches % 2)
      return failure("needs an even number of ranks and of micro-batches");
    [[fallthrough]];
  case ScheduleKind::DualPipeV:
    if (microBatches < 2 * ranks)
      return failure("needs at least 2 x ranks = " + std::to_string(2 * ranks) +
                     " micro-batches");
    break;
  default:
    break;
  }
  PipelineSchedule s;
  s.kind = kind;
  s.ranks = ranks;
  s.microBatches = microBatches;
  s.stages = kind == ScheduleKind::DualPipeV ? 2 * ranks : ranks;
  for (int r = 0; r < ranks; ++r) {
    if (kind == ScheduleKind::DualPipe || kind == ScheduleKind::DualPipeV)
      s.steps.push_back(dualPipeRank(s, r));
    else
      s.steps.push_back(oneFOneBRank(s, r, kind == ScheduleKind::ZeroBubble));
  }
  if (Error e = validateSchedule(s))
    return e;
  return s;
}

Error validateSchedule(const PipelineSchedule &s) {
  auto bad = [&](int rank, const std::string &why) {
    return Error::failure(std::string("schedule ") + scheduleName(s.kind) + ": rank " +
                          std::to_string(rank) + ": " + why);
  };
  if (static_cast<int>(s.steps.size()) != s.ranks)
    return Error::failure("schedule: " + std::to_string(s.steps.size()) + " rank programs for " +
                          std::to_string(s.ranks) + " ranks");
  // (stage, mb) -> how often each pass ran, over all ranks.
  std::map<std::pair<int, int>, std::array<int, 4>> seen;
  for (int r = 0; r < s.ranks; ++r) {
    std::deque<Chunk> pending;
    std::map<std::pair<int, int>, int> lastForward, lastBackward; // (stage, direction) -> mb
    std::set<std::pair<int, int>> forwardDone;
    for (const ScheduleStep &step : s.steps[r]) {
      std::vector<Chunk> chunks{step.chunk};
      if (step.overlappedBackward) {
        if (step.chunk.pass != ChunkPass::Forward ||
            step.overlappedBackward->pass != ChunkPass::Backward)
          return bad(r, "an overlapped pair must be an F and a full B");
        chunks.push_back(*step.overlappedBackward);
      }
      for (const Chunk &c : chunks) {
        std::string what = chunkLabel(s, r, c);
        if (c.stage < 0 || c.stage >= s.stages || c.microBatch < 0 ||
            c.microBatch >= s.microBatches)
          return bad(r, what + " is out of range");
        if (s.rankOf(c.stage, c.microBatch) != r)
          return bad(r, what + " belongs on rank " +
                            std::to_string(s.rankOf(c.stage, c.microBatch)));
        std::pair<int, int> key{c.stage, c.microBatch};
        seen[key][static_cast<int>(c.pass)]++;
        int direction = s.kind == ScheduleKind::DualPipe
                            ? c.microBatch / s.microBatchesPerDirection()
                            : 0;
        std::pair<int, int> lane{c.stage, direction};
        switch (c.pass) {
        case ChunkPass::Forward: {
          auto it = lastForward.find(lane);
          if (it != lastForward.end() && it->second + 1 != c.microBatch)
            return bad(r, what + " is out of micro-batch order");
          if (it == lastForward.end() &&
              c.microBatch != direction * s.microBatchesPerDirection())
            return bad(r, what + " is out of micro-batch order");
          lastForward[lane] = c.microBatch;
          forwardDone.insert(key);
          break;
        }
        case ChunkPass::Backward:
        case ChunkPass::BackwardInput: {
          if (!forwardDone.count(key))
            return bad(r, what + " runs before its forward");
          auto it = lastBackward.find(lane);
          int expected = it == lastBackward.end() ? direction * s.microBatchesPerDirection()
                                                  : it->second + 1;
          if (c.microBatch != expected)
            return bad(r, what + " is out of micro-batch order");
          lastBackward[lane] = c.microBatch;
          if (c.pass == ChunkPass::BackwardInput)
            pending.push_back(c);
          break;
        }
        case ChunkPass::BackwardWeight:
          if (pending.empty() || pending.front().stage != c.stage ||
              pending.front().microBatch != c.microBatch)
            return bad(r, what + " is not the oldest pending input gradient's");
          pending.pop_front();
          break;
        }
      }
    }
    if (!pending.empty())
      return bad(r, chunkLabel(s, r, pending.front()) + " never gets its W");
  }
  for (int stage = 0; stage < s.stages; ++stage)
    for (int mb = 0; mb < s.microBatches; ++mb) {
      const std::array<int, 4> &n = seen[{stage, mb}];
      int f = n[0], b = n[1], bi = n[2], w = n[3];
      if (f != 1 || b + bi != 1 || bi != w)
        return Error::failure(std::string("schedule ") + scheduleName(s.kind) + ": stage " +
                              std::to_string(stage) + " micro-batch " + std::to_string(mb) +
                              " has " + std::to_string(f) + " forwards and " +
                              std::to_string(b + bi) + " backwards (" + std::to_string(w) +
                              " W), not one each");
    }
  return Error::success();
}

std::string chunkLabel(const PipelineSchedule &s, int rank, const Chunk &c) {
  std::string text = passLabel(c.pass) + std::to_string(c.microBatch);
  if (s.kind == ScheduleKind::DualPipeV)
    text += c.stage == rank ? "a" : "b";
  return text;
}

std::string stepLabel(const PipelineSchedule &s, int rank, const ScheduleStep &step) {
  std::string text = chunkLabel(s, rank, step.chunk);
  if (step.overlappedBackward)
    text += "&" + chunkLabel(s, rank, *step.overlappedBackward);
  return text;
}

std::string formatScheduleTable(const PipelineSchedule &s) {
  bool dual = s.sections() == 8;
  std::vector<std::string> heads;
  for (int i = 1; i <= s.sections(); ++i)
    heads.push_back(dual ? "S" + std::to_string(i)
                         : std::vector<std::string>{"warm-up", "steady", "cool-down"}[i - 1]);
  std::string out = "| r |";
  for (const std::string &h : heads)
    out += " " + h + " |";
  out += "\n|---|";
  for (size_t i = 0; i < heads.size(); ++i)
    out += "---|";
  out += "\n";
  for (int r = 0; r < s.ranks; ++r) {
    std::vector<std::string> cells(s.sections());
    for (const ScheduleStep &step : s.steps[r]) {
      std::string &cell = cells[step.section - 1];
      cell += (cell.empty() ? "" : " ") + stepLabel(s, r, step);
    }
    out += "| " + std::to_string(r) + " |";
    for (const std::string &cell : cells)
      out += " " + (cell.empty() ? std::string("–") : cell) + " |";
    out += "\n";
  }
  return out;
}

} // namespace dsv3::rt
