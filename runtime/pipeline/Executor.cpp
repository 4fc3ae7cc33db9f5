//===- Executor.cpp - one pipeline rank running its schedule --------------===//
#include "runtime/pipeline/Executor.h"

#include "runtime/pipeline/Simulator.h"
#include "runtime/pipeline/TimelineSvg.h"
#include "runtime/support/Trace.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <thread>

namespace dsv3::rt {

//===----------------------------------------------------------------------===//
// In-process transport
//===----------------------------------------------------------------------===//

class InProcessTransport::Endpoint : public PipelineTransport {
public:
  Endpoint(InProcessTransport &owner, int rank) : owner(owner), rank(rank) {}
  Error send(int to, int64_t tag, std::vector<float> data) override {
    owner.mailbox[{rank, to, tag}] = std::move(data);
    return Error::success();
  }
  std::string progressMode() const override { return "one process's round-robin"; }
  Expected<bool> tryReceive(int from, int64_t tag, std::vector<float> &data) override {
    auto it = owner.mailbox.find({from, rank, tag});
    if (it == owner.mailbox.end())
      return false;
    if (it->second.size() != data.size())
      return Error::failure("pipeline message " + std::to_string(tag) + " from rank " +
                            std::to_string(from) + " has " +
                            std::to_string(it->second.size()) + " floats, expected " +
                            std::to_string(data.size()));
    data = std::move(it->second);
    owner.mailbox.erase(it);
    return true;
  }

private:
  InProcessTransport &owner;
  int rank;
};

InProcessTransport::InProcessTransport(int ranks) {
  for (int r = 0; r < ranks; ++r)
    endpoints.push_back(std::make_unique<Endpoint>(*this, r));
}

InProcessTransport::~InProcessTransport() = default;

PipelineTransport &InProcessTransport::endpoint(int rank) { return *endpoints.at(rank); }

//===----------------------------------------------------------------------===//
// PipelineRank
//===----------------------------------------------------------------------===//

MicroBatchInputs splitRows(const int64_t *ids, const int64_t *segments, int64_t rows,
                           int64_t seqLen, int microBatches) {
  int64_t perMicroBatch = rows / microBatches;
  return [=](int mb) {
    int64_t offset = mb * perMicroBatch * seqLen;
    std::vector<std::pair<std::string, BufferArg>> args{
        {"input_ids", {const_cast<int64_t *>(ids) + offset, {perMicroBatch, seqLen}}}};
    if (segments)
      args.push_back(
          {"segment_ids", {const_cast<int64_t *>(segments) + offset, {perMicroBatch, seqLen}}});
    return args;
  };
}

namespace {

const auto processStart = std::chrono::steady_clock::now();
/// Seconds from the process's start to `t`.
double processSeconds(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(t - processStart).count();
}

const InputSlot *inputNamed(const EntryPoint &e, const std::string &name) {
  for (const InputSlot &s : e.inputs)
    if (s.name == name)
      return &s;
  return nullptr;
}

} // namespace

PipelineRank::PipelineRank(const PipelineSchedule &schedule, int rank,
                           const Executable &executable, float *params, MicroBatchInputs inputs,
                           PipelineTransport &transport)
    : schedule(schedule), rank(rank), executable(executable), params(params),
      inputs(std::move(inputs)), transport(transport),
      grads(executable.layout().totalElements, 0.0f) {}

int64_t PipelineRank::tagOf(bool gradient, int stage, int mb) const {
  return ((gradient ? 1 : 0) * int64_t(schedule.stages) + stage) * schedule.microBatches + mb;
}

Expected<bool> PipelineRank::ready(const Chunk &c) {
  // What this chunk receives from another stage: a forward its input
  // hidden state, a backward its output's gradient.
  std::optional<StageMessage> message = stageInput(schedule, c);
  if (!message)
    return true;
  bool forward = !message->gradient;
  std::string name = message->value();
  Store &store = held[{c.stage, c.microBatch}];
  if (store.count(name))
    return true;
  // The seed is received by the micro-batch's first backward chunk of the
  // stage even when only its W reads it (stage 0's Bi computes nothing), so
  // look it up in the whole backward's signature.
  std::string entry =
      chunkFunction(forward ? c : Chunk{ChunkPass::Backward, c.stage, c.microBatch});
  const EntryPoint *e = executable.entry(entry);
  if (!e)
    return Error::failure("the compiled module has no entry point '" + entry +
                          "' (compile with pipeline stages)");
  const InputSlot *slot = inputNamed(*e, name);
  if (!slot) // the last stage's backward has no seed
    return true;
  int peer = schedule.rankOf(message->from, c.microBatch);
  if (peer == rank)
    return Error::failure("pipeline rank " + std::to_string(rank) + ": " +
                          chunkLabel(schedule, rank, c) + " runs before its local input");
  HostTensor t(slot->type, slot->shape);
  std::vector<float> data(t.numElements());
  Expected<bool> got = transport.tryReceive(peer, tagOf(!forward, c.stage, c.microBatch), data);
  if (!got || !*got)
    return got;
  std::memcpy(t.bytes.data(), data.data(), t.bytes.size());
  heldBytes += t.bytes.size();
  peakHeld = std::max(peakHeld, heldBytes);
  store.emplace(name, std::move(t));
  return true;
}

Error PipelineRank::run(const std::string &name, const std::vector<ChunkCall> &calls) {
  const EntryPoint *e = executable.entry(name);
  if (!e)
    return Error::failure("the compiled module has no entry point '" + name + "'");
  // Which chunk an argument or result belongs to: a fused pair names them
  // "forward.<name>" and "backward.<name>".
  auto owner = [&](const std::string &full) -> std::pair<const ChunkCall *, std::string> {
    for (const ChunkCall &call : calls)
      if (full.compare(0, call.prefix.size(), call.prefix) == 0)
        return {&call, full.substr(call.prefix.size())};
    return {nullptr, full};
  };
  std::vector<std::vector<std::pair<std::string, BufferArg>>> tokens;
  for (const ChunkCall &call : calls)
    tokens.push_back(inputs(call.chunk.microBatch));
  std::vector<BufferArg> args;
  for (const InputSlot &in : e->inputs) {
    auto [call, localName] = owner(in.name);
    const std::string &local = localName;
    if (!call)
      return Error::failure(name + ": argument '" + in.name + "' belongs to no chunk of the step");
    const Chunk &c = call->chunk;
    const auto &rows = tokens[call - calls.data()];
    auto t = std::find_if(rows.begin(), rows.end(),
                          [&](const auto &p) { return p.first == local; });
    if (t != rows.end()) {
      args.push_back(t->second);
      continue;
    }
    Store &store = held[{c.stage, c.microBatch}];
    auto it = store.find(local);
    if (it == store.end())
      return Error::failure("pipeline rank " + std::to_string(rank) + ": " +
                            chunkLabel(schedule, rank, c) + " (" + name + ") needs '" + local +
                            "', which no earlier chunk left");
    args.push_back(it->second.arg());
  }
  std::vector<HostTensor> outs;
  outs.reserve(e->outputs.size());
  std::vector<BufferArg> outArgs;
  for (const OutputSlot &o : e->outputs)
    outs.emplace_back(o.type, o.shape);
  for (HostTensor &t : outs)
    outArgs.push_back(t.arg());
  if (Error err = executable.call(name, params, args, outArgs))
    return err;

  const ParamLayout &layout = executable.layout();
  for (size_t i = 0; i < outs.size(); ++i) {
    const OutputSlot &o = e->outputs[i];
    HostTensor &t = outs[i];
    auto [call, local] = owner(o.name);
    if (!call)
      return Error::failure(name + ": result '" + o.name + "' belongs to no chunk of the step");
    const Chunk &c = call->chunk;
    auto keep = [&](int stage, const std::string &as) {
      heldBytes += t.bytes.size();
      peakHeld = std::max(peakHeld, heldBytes);
      held[{stage, c.microBatch}].insert_or_assign(as, std::move(t));
    };
    if (o.role == "activation") {
      // "hidden" goes to the next stage, "grad.hidden" to the previous one,
      // where it is the gradient of that stage's output (its seed).
      std::optional<StageMessage> message = stageOutput(schedule, c);
      if (!message)
        continue;
      if (local != message->value())
        return Error::failure(name + ": " + chunkLabel(schedule, rank, c) + " returns '" + local +
                              "', where the schedule expects '" + message->value() + "'");
      int peer = schedule.rankOf(message->to, c.microBatch);
      if (peer == rank) {
        keep(message->to, local);
      } else {
        if (Error err = transport.send(peer, tagOf(message->gradient, message->to, c.microBatch),
                                       std::vector<float>(t.f32(), t.f32() + t.numElements())))
          return err;
      }
    } else if (o.role == "saved") {
      keep(c.stage, local);
    } else if (o.role == "gradient") {
      const ParamSlot *slot = layout.find(o.param);
      if (!slot || slot->numElements() != t.numElements())
        return Error::failure(name + ": gradient '" + o.name +
                              "' does not match the parameter layout");
      float *g = grads.data() + slot->offset;
      const float *d = t.f32();
      for (int64_t k = 0; k < t.numElements(); ++k)
        g[k] += d[k];
    } else if (isLossRole(o.role) && o.shape.empty()) {
      lossSums[o.role] += t.f32()[0];
    } else if (o.role == "expert_ids" && !o.param.empty()) {
      const ParamSlot *bias = layout.find(o.param);
      if (!bias)
        return Error::failure(name + ": expert choices '" + o.name + "' name '" + o.param +
                              "', which is not a parameter");
      std::vector<int64_t> &load = loads[o.param];
      load.resize(bias->numElements(), 0);
      const int64_t *ids = t.i64();
      for (int64_t k = 0; k < t.numElements(); ++k)
        if (ids[k] >= 0 && ids[k] < bias->numElements())
          ++load[ids[k]];
    }
  }
  return Error::success();
}

void PipelineRank::release(int stage, int mb) {
  auto it = held.find({stage, mb});
  if (it == held.end())
    return;
  for (auto &[name, t] : it->second)
    heldBytes -= t.bytes.size();
  held.erase(it);
}

Expected<PipelineRank::Progress> PipelineRank::step() {
  const std::vector<ScheduleStep> &steps = schedule.steps[rank];
  if (next >= steps.size())
    return Progress::Done;
  if (Error e = transport.progress())
    return e;
  const ScheduleStep &s = steps[next];
  std::vector<Chunk> chunks{s.chunk};
  if (s.overlappedBackward)
    chunks.push_back(*s.overlappedBackward);
  for (const Chunk &c : chunks) {
    Expected<bool> r = ready(c);
    if (!r)
      return r.takeError();
    if (!*r)
      return Progress::Blocked;
  }
  auto begin = std::chrono::steady_clock::now();
  // An F&B pair runs as the one function dsv3-comm-overlap fused it into,
  // when the module has it (expert exchanges to overlap); else chunk after
  // chunk.
  std::string fused =
      s.overlappedBackward ? pairFunction(s.chunk, *s.overlappedBackward) : std::string();
  if (!fused.empty() && executable.entry(fused)) {
    if (Error e = run(fused, {{s.chunk, "forward."}, {*s.overlappedBackward, "backward."}}))
      return e;
  } else {
    for (const Chunk &c : chunks)
      if (Error e = run(chunkFunction(c), {{c, ""}}))
        return e;
  }
  // The backward that ends a micro-batch's use of a stage frees what it
  // kept (B, or the W after a Bi).
  for (const Chunk &c : chunks)
    if (c.pass == ChunkPass::Backward || c.pass == ChunkPass::BackwardWeight)
      release(c.stage, c.microBatch);
  // Activations in the simulator's units: a forward holds one (stage,
  // micro-batch) from its step on, the backward that computes the input
  // gradient (B or Bi) gives it back at the end of its step.
  if (s.chunk.pass == ChunkPass::Forward)
    ++liveUnits;
  peakUnitsInStep = std::max(peakUnitsInStep, liveUnits);
  for (const Chunk &c : chunks)
    if (c.pass == ChunkPass::Backward || c.pass == ChunkPass::BackwardInput)
      --liveUnits;
  peakUnits = std::max(peakUnits, liveUnits);
  auto end = std::chrono::steady_clock::now();
  times.push_back({processSeconds(begin), processSeconds(end), next});
  // The trace's compute lane names each step as the schedule table does.
  if (TraceRecorder::process().enabled())
    TraceRecorder::process().record(stepLabel(schedule, rank, s), TraceLane::Compute, begin, end);
  if (++next == steps.size()) {
    if (Error e = transport.flush())
      return e;
    // Each micro-batch's loss is a mean over its tokens; the step's is the
    // mean over micro-batches.
    float scale = 1.0f / static_cast<float>(schedule.microBatches);
    for (float &g : grads)
      g *= scale;
    for (auto &[name, v] : lossSums)
      v /= schedule.microBatches;
  }
  return Progress::Ran;
}

Error PipelineRank::stepOutputs(Communicator &pipeline, EntryPoint &entry,
                                std::unique_ptr<OutputBuffers> &buffers) const {
  if (next < schedule.steps[rank].size())
    return Error::failure("pipeline rank " + std::to_string(rank) +
                          ": the step's outputs are read before its last chunk ran");
  entry = EntryPoint{};
  entry.name = "forward_grad";
  // Losses as the forward chunks name them (the same on every rank: one
  // executable), then gradients in layout order. Only the schedule's chunk
  // functions carry the one-process names (a fused F&B pair prefixes its
  // halves' results).
  std::set<std::string> chunkEntries;
  for (const std::vector<ScheduleStep> &steps : schedule.steps)
    for (const ScheduleStep &s : steps) {
      chunkEntries.insert(chunkFunction(s.chunk));
      if (s.overlappedBackward)
        chunkEntries.insert(chunkFunction(*s.overlappedBackward));
    }
  for (const std::string &role : lossRoles()) {
    for (const EntryPoint &e : executable.entries()) {
      if (!chunkEntries.count(e.name))
        continue;
      auto o = std::find_if(e.outputs.begin(), e.outputs.end(), [&](const OutputSlot &s) {
        return s.role == role && s.shape.empty() && s.type == ElementType::F32;
      });
      if (o != e.outputs.end()) {
        entry.outputs.push_back(*o);
        break;
      }
    }
  }
  size_t losses = entry.outputs.size();
  const ParamLayout &layout = executable.layout();
  std::map<std::string, const OutputSlot *> gradientOf;
  for (const EntryPoint &e : executable.entries())
    for (const OutputSlot &o : e.outputs)
      if (o.role == "gradient" && chunkEntries.count(e.name))
        gradientOf.emplace(o.param, &o);
  for (const ParamSlot &slot : layout.slots)
    if (auto it = gradientOf.find(slot.name); it != gradientOf.end())
      entry.outputs.push_back(*it->second);

  std::vector<float> sums;
  for (size_t i = 0; i < losses; ++i) {
    auto it = lossSums.find(entry.outputs[i].role);
    sums.push_back(it == lossSums.end() ? 0.0f : static_cast<float>(it->second));
  }
  if (!sums.empty())
    if (Error e = Communicator::complete(
            pipeline.allReduceSum(ElementType::F32, sums.data(), static_cast<int64_t>(sums.size()))))
      return e;
  buffers = std::make_unique<OutputBuffers>(entry);
  for (size_t i = 0; i < entry.outputs.size(); ++i) {
    if (i < losses) {
      buffers->f32(i)[0] = sums[i];
      continue;
    }
    const ParamSlot *slot = layout.find(entry.outputs[i].param);
    std::copy_n(grads.begin() + slot->offset, slot->numElements(), buffers->f32(i));
  }
  return Error::success();
}

Expected<std::string> PipelineRank::measuredBubbles(Communicator &pipeline,
                                                    double elapsed) const {
  // Each rank's elapsed time, then its step durations, padded to the
  // longest program.
  size_t longest = 0;
  for (const auto &steps : schedule.steps)
    longest = std::max(longest, steps.size());
  // Per rank: elapsed, peak activation units between and inside steps,
  // peak bytes held and one unit's bytes, then the step durations.
  constexpr size_t head = 5;
  size_t row = longest + head;
  std::vector<float> mine(row, 0.f), all(row * schedule.ranks);
  mine[0] = static_cast<float>(elapsed);
  mine[1] = static_cast<float>(peakUnits);
  mine[2] = static_cast<float>(peakUnitsInStep);
  mine[3] = static_cast<float>(peakHeld);
  mine[4] = static_cast<float>(unitBytes());
  for (const StepTime &t : times)
    mine[head + t.step] = static_cast<float>(t.end - t.start);
  if (Error e = Communicator::complete(pipeline.allGather(ElementType::F32, mine.data(),
                                                          all.data(), int64_t(row))))
    return e;
  double makespan = 0;
  std::vector<std::vector<double>> durations(schedule.ranks);
  for (int r = 0; r < schedule.ranks; ++r) {
    makespan = std::max(makespan, double(all[r * row]));
    durations[r].assign(all.begin() + r * row + head,
                        all.begin() + r * row + head + schedule.steps[r].size());
  }
  auto predicted = simulate(schedule, ChunkCosts{}, meanCostsByKind(schedule, durations));
  if (!predicted)
    return predicted.takeError();
  char line[320];
  std::snprintf(line, sizeof line,
                "pipeline %s: %d ranks, %d stages, %d micro-batches; makespan %.1f ms "
                "(simulated with the measured chunk costs: %.1f ms); messages progressed by "
                "%s\n",
                scheduleName(schedule.kind), schedule.ranks, schedule.stages,
                schedule.microBatches, makespan * 1e3, predicted->makespan * 1e3,
                transport.progressMode().c_str());
  std::string out = line;
  for (int r = 0; r < schedule.ranks; ++r) {
    double busy = 0;
    for (double d : durations[r])
      busy += d;
    std::snprintf(line, sizeof line,
                  "  rank %d: busy %.1f ms, bubble %.1f ms measured, %.1f ms simulated\n", r,
                  busy * 1e3, (makespan - busy) * 1e3, predicted->ranks[r].bubble * 1e3);
    out += line;
  }
  // Activation memory: the units the schedule holds (the simulator's count
  // and the formula), and the bytes really held for later chunks (received
  // states, saved values, the seeds a W still reads) in units of one
  // forward's saved values.
  std::snprintf(line, sizeof line,
                "activations per rank (stage x micro-batch units; formula: %d):\n",
                activationFormula(schedule));
  out += line;
  for (int r = 0; r < schedule.ranks; ++r) {
    const float *m = &all[r * row];
    std::snprintf(line, sizeof line,
                  "  rank %d: peak %d units between steps, %d inside an F&B step "
                  "(simulated %d/%d); %.2f MiB held at peak = %.1f units of %.2f MiB\n",
                  r, int(m[1]), int(m[2]), predicted->ranks[r].peakActivations,
                  predicted->ranks[r].peakActivationsInStep, m[3] / 1048576.0,
                  m[4] > 0 ? m[3] / m[4] : 0.0, m[4] / 1048576.0);
    out += line;
  }
  return out;
}

Expected<std::string>
PipelineRank::executedTimelineSvg(Communicator &pipeline,
                                  std::chrono::steady_clock::time_point start) const {
  double origin = processSeconds(start);
  size_t longest = 0;
  for (const auto &steps : schedule.steps)
    longest = std::max(longest, steps.size());
  std::vector<float> mine(2 * longest, 0.f), all(mine.size() * schedule.ranks);
  for (const StepTime &t : times) {
    mine[2 * t.step] = static_cast<float>((t.start - origin) * 1e3);
    mine[2 * t.step + 1] = static_cast<float>((t.end - origin) * 1e3);
  }
  if (Error e = Communicator::complete(pipeline.allGather(
          ElementType::F32, mine.data(), all.data(), static_cast<int64_t>(mine.size()))))
    return e;
  StepSpans spans(schedule.ranks);
  for (int r = 0; r < schedule.ranks; ++r)
    for (size_t i = 0; i < schedule.steps[r].size(); ++i)
      spans[r].emplace_back(all[r * mine.size() + 2 * i], all[r * mine.size() + 2 * i + 1]);
  char title[200];
  std::snprintf(title, sizeof title, "%s, %d ranks, %d stages, %d micro-batches: executed",
                scheduleName(schedule.kind), schedule.ranks, schedule.stages,
                schedule.microBatches);
  return timelineSvg(schedule, spans, title, "ms");
}

double PipelineRank::unitBytes() const {
  // The mean over this rank's stages of what a forward leaves for its
  // backward: the received hidden state and the saved values.
  double total = 0;
  int counted = 0;
  for (int stage : schedule.stagesOn(rank)) {
    const EntryPoint *e = executable.entry(chunkFunction({ChunkPass::Forward, stage, 0}));
    if (!e)
      continue;
    auto size = [](ElementType type, const std::vector<int64_t> &shape) {
      double n = double(elementSize(type));
      for (int64_t d : shape)
        n *= double(d);
      return n;
    };
    double bytes = 0;
    for (const OutputSlot &o : e->outputs)
      if (o.role == "saved")
        bytes += size(o.type, o.shape);
    if (const InputSlot *in = inputNamed(*e, "hidden"))
      bytes += size(in->type, in->shape);
    total += bytes;
    ++counted;
  }
  return counted ? total / counted : 0;
}

Error PipelineRank::runToEnd() {
  for (;;) {
    Expected<Progress> p = step();
    if (!p)
      return p.takeError();
    if (*p == Progress::Done)
      return Error::success();
    if (*p == Progress::Blocked)
      std::this_thread::yield();
  }
}

} // namespace dsv3::rt
