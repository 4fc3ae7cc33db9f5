//===- Simulator.cpp - replaying a pipeline schedule with chunk costs -----===//
//
// A discrete-event replay without an event queue: a rank's next step can be
// timed as soon as the finish times of everything it receives are known, so
// sweeping the ranks until none advances gives the event-driven answer, and
// a sweep that advances no rank before all are done is a deadlock.
//
//===----------------------------------------------------------------------===//
#include "runtime/pipeline/Simulator.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

namespace dsv3::rt {

double ChunkCosts::of(const ScheduleStep &step) const {
  if (step.overlappedBackward)
    return pair();
  switch (step.chunk.pass) {
  case ChunkPass::Forward:
    return forward;
  case ChunkPass::Backward:
    return backward;
  case ChunkPass::BackwardInput:
    return backwardInput();
  case ChunkPass::BackwardWeight:
    return weight;
  }
  return 0;
}

Expected<ChunkCosts> parseChunkCosts(std::string_view text) {
  ChunkCosts costs;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view entry = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    size_t eq = entry.find('=');
    std::string key(entry.substr(0, eq));
    std::string value = eq == std::string_view::npos ? "" : std::string(entry.substr(eq + 1));
    double *slot = key == "F"      ? &costs.forward
                   : key == "B"    ? &costs.backward
                   : key == "W"    ? &costs.weight
                   : key == "FB"   ? &costs.overlapped
                   : key == "comm" ? &costs.comm
                                   : nullptr;
    if (!slot)
      return Error::failure("--costs: unknown entry '" + std::string(entry) +
                            "' (expected F=, B=, W=, FB= or comm=)");
    char *end = nullptr;
    double v = std::strtod(value.c_str(), &end);
    if (value.empty() || *end || !std::isfinite(v) || v < 0)
      return Error::failure("--costs: '" + std::string(entry) +
                            "' needs a non-negative number");
    *slot = v;
  }
  if (costs.weight > costs.backward)
    return Error::failure("--costs: W (the weight-gradient part of B) exceeds B");
  return costs;
}

double Simulation::worstBubble() const {
  double worst = 0;
  for (const SimulatedRank &r : ranks)
    worst = std::max(worst, r.bubble);
  return worst;
}

namespace {

/// What a step runs, for grouping measured durations: pass and stage of
/// its chunk and of the backward paired with it (-1 when none).
std::tuple<int, int, int, int> kindOf(const ScheduleStep &step) {
  const std::optional<Chunk> &b = step.overlappedBackward;
  return {static_cast<int>(step.chunk.pass), step.chunk.stage, b ? static_cast<int>(b->pass) : -1,
          b ? b->stage : -1};
}

} // namespace

StepCost meanCostsByKind(const PipelineSchedule &s,
                         const std::vector<std::vector<double>> &durations) {
  std::map<std::tuple<int, int, int, int>, std::pair<double, int>> sums;
  for (int r = 0; r < s.ranks && r < static_cast<int>(durations.size()); ++r)
    for (size_t i = 0; i < s.steps[r].size() && i < durations[r].size(); ++i) {
      auto &[sum, n] = sums[kindOf(s.steps[r][i])];
      sum += durations[r][i];
      ++n;
    }
  std::map<std::tuple<int, int, int, int>, double> means;
  for (auto &[kind, sn] : sums)
    means[kind] = sn.first / sn.second;
  return [means](int, const ScheduleStep &step) {
    auto it = means.find(kindOf(step));
    return it == means.end() ? 0.0 : it->second;
  };
}

Expected<Simulation> simulate(const PipelineSchedule &s, const ChunkCosts &costs,
                              const StepCost &stepCost) {
  // Finish time (and rank) of each (forward?, stage, mb): forward output, or
  // input gradient (from B or Bi).
  using Key = std::tuple<bool, int, int>;
  std::map<Key, std::pair<double, int>> finished;
  Simulation sim;
  sim.ranks.resize(s.ranks);
  std::vector<size_t> next(s.ranks, 0);
  std::vector<double> freeAt(s.ranks, 0);
  std::vector<int> live(s.ranks, 0);

  // When the inputs of `c` on `rank` are all there, or nullopt if one is
  // not produced yet.
  auto inputsReady = [&](int rank, const Chunk &c, int &messages) -> std::optional<double> {
    double ready = 0;
    auto need = [&](bool forward, int stage) -> bool {
      auto it = finished.find({forward, stage, c.microBatch});
      if (it == finished.end())
        return false;
      bool remote = it->second.second != rank;
      messages += remote;
      ready = std::max(ready, it->second.first + (remote ? costs.comm : 0));
      return true;
    };
    // A backward also needs its own stage's forward, a W its Bi.
    if (c.pass == ChunkPass::Backward || c.pass == ChunkPass::BackwardInput)
      if (!need(true, c.stage))
        return std::nullopt;
    if (c.pass == ChunkPass::BackwardWeight && !need(false, c.stage))
      return std::nullopt;
    if (std::optional<StageMessage> m = stageInput(s, c))
      if (!need(!m->gradient, m->from))
        return std::nullopt;
    return ready;
  };

  size_t remaining = 0;
  for (const auto &steps : s.steps)
    remaining += steps.size();
  while (remaining) {
    bool advanced = false;
    for (int r = 0; r < s.ranks; ++r) {
      while (next[r] < s.steps[r].size()) {
        const ScheduleStep &step = s.steps[r][next[r]];
        int messages = 0;
        std::optional<double> ready = inputsReady(r, step.chunk, messages);
        if (ready && step.overlappedBackward) {
          std::optional<double> other = inputsReady(r, *step.overlappedBackward, messages);
          ready = other ? std::optional<double>(std::max(*ready, *other)) : std::nullopt;
        }
        if (!ready)
          break;
        sim.messages += messages;
        double start = std::max(freeAt[r], *ready),
               end = start + (stepCost ? stepCost(r, step) : costs.of(step));
        SimulatedRank &rank = sim.ranks[r];
        rank.steps.push_back({start, end});
        rank.busy += end - start;
        freeAt[r] = end;
        // Activations: the forward allocates at the start, a backward that
        // produces the input gradient frees at the end.
        auto counts = [](const Chunk &c) {
          return c.pass == ChunkPass::Backward || c.pass == ChunkPass::BackwardInput;
        };
        if (step.chunk.pass == ChunkPass::Forward)
          ++live[r];
        rank.peakActivationsInStep = std::max(rank.peakActivationsInStep, live[r]);
        for (const Chunk *c : {&step.chunk, step.overlappedBackward ? &*step.overlappedBackward
                                                                    : nullptr}) {
          if (!c)
            continue;
          if (counts(*c))
            --live[r];
          if (c->pass != ChunkPass::BackwardWeight)
            finished[{c->pass == ChunkPass::Forward, c->stage, c->microBatch}] = {end, r};
        }
        rank.peakActivations = std::max(rank.peakActivations, live[r]);
        ++next[r];
        --remaining;
        advanced = true;
      }
    }
    if (!advanced) {
      // Name the first stuck rank and what it waits for.
      for (int r = 0; r < s.ranks; ++r)
        if (next[r] < s.steps[r].size())
          return Error::failure(std::string("schedule ") + scheduleName(s.kind) +
                                " deadlocks: rank " + std::to_string(r) + " waits forever at step " +
                                std::to_string(next[r]) + " (" +
                                stepLabel(s, r, s.steps[r][next[r]]) + ")");
    }
  }
  for (const SimulatedRank &r : sim.ranks)
    if (!r.steps.empty())
      sim.makespan = std::max(sim.makespan, r.steps.back().end);
  for (SimulatedRank &r : sim.ranks)
    r.bubble = sim.makespan - r.busy;
  return sim;
}

double bubbleFormula(const PipelineSchedule &s, const ChunkCosts &c) {
  double pp = s.stages;
  switch (s.kind) {
  case ScheduleKind::OneFOneB:
    return (pp - 1) * (c.forward + c.backward);
  case ScheduleKind::ZeroBubble:
    return (pp - 1) * (c.forward + c.backward - 2 * c.weight);
  case ScheduleKind::DualPipe:
  case ScheduleKind::DualPipeV:
    return (pp / 2 - 1) * (c.pair() + c.backward - 3 * c.weight);
  }
  return 0;
}

int activationFormula(const PipelineSchedule &s) {
  bool dual = s.kind == ScheduleKind::DualPipe || s.kind == ScheduleKind::DualPipeV;
  return s.stages + (dual ? 1 : 0);
}

std::string formatTimeline(const PipelineSchedule &s, const Simulation &sim,
                           const ChunkCosts &costs, int maxWidth) {
  // One unit: the smallest positive cost; every other must be a multiple.
  std::vector<double> all{costs.forward, costs.backward, costs.weight, costs.backwardInput(),
                          costs.pair(), costs.comm};
  double unit = 0;
  for (double v : all)
    if (v > 0 && (unit == 0 || v < unit))
      unit = v;
  if (unit == 0)
    return "";
  auto units = [&](double v) -> long {
    double q = v / unit;
    return std::abs(q - std::round(q)) < 1e-9 ? std::lround(q) : -1;
  };
  for (double v : all)
    if (units(v) < 0)
      return "";
  long width = units(sim.makespan);
  if (width > maxWidth)
    return "";
  std::string out;
  for (int r = 0; r < s.ranks; ++r) {
    std::string line(width, '.');
    for (size_t i = 0; i < s.steps[r].size(); ++i) {
      const ScheduleStep &step = s.steps[r][i];
      long at = units(sim.ranks[r].steps[i].start), n = units(costs.of(step));
      long forwardPart = step.overlappedBackward
                             ? std::min(n, units(std::min(costs.forward, costs.pair())))
                             : 0;
      char c = step.chunk.pass == ChunkPass::Forward          ? 'F'
               : step.chunk.pass == ChunkPass::BackwardWeight ? 'W'
                                                              : 'B';
      for (long k = 0; k < n && at + k < width; ++k)
        line[at + k] = step.overlappedBackward ? (k < forwardPart ? 'F' : 'B') : c;
    }
    out += "r" + std::to_string(r) + " " + line + "\n";
  }
  return out;
}

} // namespace dsv3::rt
