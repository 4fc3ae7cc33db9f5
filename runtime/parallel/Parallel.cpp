//===- Parallel.cpp - one job's ranks and what they share -----------------===//
#include "runtime/parallel/Parallel.h"

#include <thread>

#include "runtime/comm/Groups.h"
#include "runtime/support/File.h"
#include "runtime/support/Trace.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace dsv3::rt {

Expected<std::unique_ptr<ProcessGroups>> ProcessGroups::create(std::unique_ptr<Communicator> world,
                                                               const ParallelPlan &plan) {
  std::unique_ptr<ProcessGroups> g(new ProcessGroups());
  g->plan_ = plan;
  int w = world->rank();
  int ep = static_cast<int>(plan.expert), pp = static_cast<int>(plan.pipeline);
  int replica = w / (ep * pp), stage = (w / ep) % pp, index = w % ep;
  auto data = world->split(/*color=*/stage * ep + index, /*key=*/replica);
  if (!data)
    return data.takeError();
  auto expert = world->split(/*color=*/replica * pp + stage, /*key=*/index);
  if (!expert)
    return expert.takeError();
  auto pipeline = world->split(/*color=*/replica * ep + index, /*key=*/stage);
  if (!pipeline)
    return pipeline.takeError();
  g->world_ = std::move(world);
  g->data_ = std::move(*data);
  g->expert_ = std::move(*expert);
  g->pipeline_ = std::move(*pipeline);
  setProcessGroup(CommGroup::World, g->world_.get());
  setProcessGroup(CommGroup::Data, g->data_.get());
  setProcessGroup(CommGroup::Expert, g->expert_.get());
  setProcessGroup(CommGroup::Pipeline, g->pipeline_.get());
  return g;
}

ProcessGroups::~ProcessGroups() {
  for (CommGroup group :
       {CommGroup::World, CommGroup::Data, CommGroup::Expert, CommGroup::Pipeline})
    setProcessGroup(group, nullptr);
}

CommStats ProcessGroups::commTotals() const {
  CommStats total;
  for (Communicator *c : {world_.get(), data_.get(), expert_.get(), pipeline_.get()}) {
    total.bytesSent += c->stats().bytesSent;
    total.bytesReceived += c->stats().bytesReceived;
    total.waitSeconds += c->stats().waitSeconds;
    total.allToAlls += c->stats().allToAlls;
    total.allToAllFlightSeconds += c->stats().allToAllFlightSeconds;
    total.allToAllExposedSeconds += c->stats().allToAllExposedSeconds;
  }
  return total;
}

Expected<std::string> allToAllReport(ProcessGroups &groups, const CommStats &before) {
  CommStats now = groups.commTotals();
  float row[3] = {static_cast<float>(now.allToAlls - before.allToAlls),
                  static_cast<float>(now.allToAllFlightSeconds - before.allToAllFlightSeconds),
                  static_cast<float>(now.allToAllExposedSeconds - before.allToAllExposedSeconds)};
  std::vector<float> all(3 * groups.world().size());
  if (Error e = Communicator::complete(
          groups.world().allGather(ElementType::F32, row, all.data(), 3)))
    return e;
  std::string text;
  double flight = 0, exposed = 0;
  char line[200];
  for (int r = 0; r < groups.world().size(); ++r) {
    const float *x = &all[3 * r];
    flight += x[1];
    exposed += x[2];
    std::snprintf(line, sizeof(line),
                  "  rank %d: %.0f all-to-alls, %.2f ms in flight, %.2f ms exposed (%.0f%% "
                  "hidden)\n",
                  r, x[0], x[1] * 1e3, x[2] * 1e3, x[1] > 0 ? 100.0 * (1 - x[2] / x[1]) : 0.0);
    text += line;
  }
  std::snprintf(line, sizeof(line),
                "all-to-all: %.2f ms in flight over the ranks, %.2f ms exposed: %.0f%% hidden "
                "behind compute%s\n",
                flight * 1e3, exposed * 1e3, flight > 0 ? 100.0 * (1 - exposed / flight) : 0.0,
                linkModel().enabled() ? " (under the link model)" : "");
  return line + text;
}

std::vector<int64_t> replicaRows(const std::vector<int64_t> &batch, int64_t rows, int64_t cols,
                                 const ProcessGroups &groups) {
  int64_t per = rows / groups.plan().data, first = groups.dataRank() * per;
  return std::vector<int64_t>(batch.begin() + first * cols, batch.begin() + (first + per) * cols);
}

namespace {

bool isPerToken(const std::string &role) {
  return role == "logits" || role == "mtp_logits" || role == "expert_ids";
}

} // namespace

Expected<double> reduceGradients(ProcessGroups &groups, const ParamLayout &layout,
                                 const OptimizerShard &shard, std::vector<float> &grads,
                                 std::vector<float> &out) {
  const ParallelPlan &plan = groups.plan();
  int64_t total = std::max<int64_t>(layout.totalElements, 1);
  int64_t size = shard.size(total), begin = shard.begin(total), valid = shard.valid(total);
  if (shard.count != 1 && shard.count != plan.data)
    return Error::failure("optimizer state in " + std::to_string(shard.count) +
                          " shards over " + std::to_string(plan.data) + " data-parallel ranks");
  out.assign(size, 0.f);
  // Each pipeline rank holds the gradients of its stages (DualPipe: both
  // copies of a stage add theirs); after this sum every pipeline rank has
  // all of them and the rest is the same on each.
  if (plan.pipeline > 1) {
    grads.resize(std::max<size_t>(grads.size(), total));
    if (Error e = Communicator::complete(
            groups.pipeline().allReduceSum(ElementType::F32, grads.data(), total)))
      return e;
  }
  if (shard.count == 1) {
    grads.resize(std::max<size_t>(grads.size(), total));
    if (plan.data > 1)
      if (Error e = Communicator::complete(
              groups.data().allReduceSum(ElementType::F32, grads.data(), total)))
        return e;
    std::copy_n(grads.begin(), total, out.begin());
  } else {
    grads.resize(shard.count * size, 0.f);
    if (Error e = Communicator::complete(
            groups.data().reduceScatterSum(ElementType::F32, grads.data(), out.data(), size)))
      return e;
  }
  // The replicated part of the slice: the expert group's ranks hold the
  // same slice of the same parameters and add their contributions.
  std::vector<std::pair<int64_t, int64_t>> replicated; // [lo, hi) in slice coordinates
  int64_t replicatedCount = 0;
  for (const ParamSlot &s : layout.slots) {
    int64_t lo = std::max(s.offset, begin), hi = std::min(s.offset + s.numElements(), begin + valid);
    if (s.shard.empty() && lo < hi) {
      replicated.push_back({lo - begin, hi - begin});
      replicatedCount += hi - lo;
    }
  }
  if (plan.expert > 1 && replicatedCount > 0) {
    std::vector<float> packed;
    packed.reserve(replicatedCount);
    for (auto [lo, hi] : replicated)
      packed.insert(packed.end(), out.begin() + lo, out.begin() + hi);
    if (Error e = Communicator::complete(
            groups.expert().allReduceSum(ElementType::F32, packed.data(), packed.size())))
      return e;
    size_t k = 0;
    for (auto [lo, hi] : replicated)
      for (int64_t i = lo; i < hi; ++i)
        out[i] = packed[k++];
  }
  float scale = 1.0f / static_cast<float>(plan.data * plan.expert);
  double allSq = 0, replicatedSq = 0;
  for (float &g : out) {
    g *= scale;
    allSq += double(g) * g;
  }
  for (auto [lo, hi] : replicated)
    for (int64_t i = lo; i < hi; ++i)
      replicatedSq += double(out[i]) * out[i];
  double expertSq = std::max(0.0, allSq - replicatedSq);
  // Each value once: replicated slices are the same on every expert rank
  // (counted on rank 0 of the group); expert blocks differ across it; with
  // ZeRO-1 the slices also differ across the data group. (A float sum:
  // ample for a clipping factor.)
  float sq = static_cast<float>(expertSq + (groups.expertRank() == 0 ? replicatedSq : 0));
  Communicator &over = shard.count > 1 ? groups.world() : groups.expert();
  if (Error e = Communicator::complete(over.allReduceSum(ElementType::F32, &sq, 1)))
    return e;
  // Summed over the world, every pipeline rank's identical copy counted.
  if (shard.count > 1)
    sq /= static_cast<float>(plan.pipeline);
  return double(sq);
}

Error gatherOutputs(const EntryPoint &entry, OutputBuffers &local, const ParamLayout &layout,
                    ProcessGroups &groups, EntryPoint &global,
                    std::unique_ptr<OutputBuffers> &buffers) {
  const ParallelPlan &plan = groups.plan();
  global = entry;
  // The job-wide shape of each output.
  for (OutputSlot &o : global.outputs) {
    if (o.role == "gradient") {
      const ParamSlot *s = layout.find(o.param);
      if (!s)
        return Error::failure("gradient '" + o.name + "' of unknown parameter '" + o.param + "'");
      if (s->shard == "expert")
        o.shape[0] *= plan.expert;
    } else if (isPerToken(o.role)) {
      o.shape[0] *= plan.data;
    } else if (!isLossRole(o.role) && plan.data > 1) {
      return Error::failure("output '" + o.name + "' (" + o.role +
                            ") has no rule to combine it across data-parallel replicas");
    }
  }
  buffers = std::make_unique<OutputBuffers>(global);
  // Gradients go through the flat buffer, as in training.
  std::vector<float> grads(std::max<int64_t>(layout.totalElements, 1), 0.f), reduced;
  for (size_t i = 0; i < entry.outputs.size(); ++i)
    if (entry.outputs[i].role == "gradient") {
      const HostTensor &in = local.tensors[i];
      std::copy_n(in.f32(), in.numElements(), grads.begin() + layout.find(entry.outputs[i].param)->offset);
    }
  if (auto sq = reduceGradients(groups, layout, OptimizerShard{}, grads, reduced); !sq)
    return sq.takeError();
  for (size_t i = 0; i < entry.outputs.size(); ++i) {
    const OutputSlot &o = entry.outputs[i];
    HostTensor &in = local.tensors[i];
    HostTensor &out = buffers->tensors[i];
    int64_t n = in.numElements();
    if (o.role == "gradient") {
      const ParamSlot *s = layout.find(o.param);
      const float *sum = reduced.data() + s->offset;
      if (s->shard == "expert") {
        if (Error e = Communicator::complete(
                groups.expert().allGather(ElementType::F32, sum, out.f32(), n)))
          return e;
      } else {
        std::memcpy(out.f32(), sum, n * sizeof(float));
      }
    } else if (isLossRole(o.role)) {
      if (Error e = Communicator::complete(groups.data().allReduceSum(ElementType::F32, in.f32(), n)))
        return e;
      for (int64_t k = 0; k < n; ++k)
        out.f32()[k] = in.f32()[k] / static_cast<float>(plan.data);
    } else if (isPerToken(o.role)) {
      if (Error e = Communicator::complete(
              groups.data().allGather(in.type, in.bytes.data(), out.bytes.data(), n)))
        return e;
    } else {
      std::memcpy(out.bytes.data(), in.bytes.data(), in.bytes.size());
    }
  }
  return Error::success();
}

Error agreeAcrossRanks(ProcessGroups *groups, Error local, const std::string &what,
                       std::chrono::milliseconds poll) {
  if (!groups)
    return local;
  int64_t failed = local ? 1 : 0;
  Expected<RequestPtr> started = groups->world().allReduceSum(ElementType::I64, &failed, 1);
  if (!started)
    return started.takeError();
  if (poll.count() > 0) {
    // Test and sleep instead of MPI's busy wait, which would take a core
    // from the rank everyone waits for.
    for (;;) {
      Expected<bool> done = (*started)->test();
      if (!done)
        return done.takeError();
      if (*done)
        break;
      std::this_thread::sleep_for(poll);
    }
  } else if (Error e = (*started)->wait()) {
    return e;
  }
  if (local)
    return local;
  if (failed)
    return Error::failure(what + " failed on another rank");
  return Error::success();
}

namespace {

std::string tracePart(const std::string &path, int rank) {
  return path + ".rank-" + std::to_string(rank) + ".part";
}

} // namespace

Error startJobTrace(ProcessGroups *groups) {
  if (Error e = agreeAcrossRanks(groups, Error::success(), "starting the trace"))
    return e;
  TraceRecorder::process().enable(TraceRecorder::Clock::now());
  return Error::success();
}

Error writeJobTrace(const std::string &path, ProcessGroups *groups) {
  int rank = groups ? groups->world().rank() : 0;
  int ranks = groups ? groups->world().size() : 1;
  std::string events = TraceRecorder::process().events(rank);
  Error wrote = Error::success();
  if (rank != 0)
    wrote = writeFileDurably(tracePart(path, rank), events.data(), events.size());
  if (Error e = agreeAcrossRanks(groups, std::move(wrote), "writing the trace"))
    return e;
  Error merged = Error::success();
  if (rank == 0) {
    std::string all = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + events;
    for (int r = 1; r < ranks && !merged; ++r) {
      std::ifstream in(tracePart(path, r));
      std::stringstream part;
      part << in.rdbuf();
      if (!in.is_open())
        merged = fileError(tracePart(path, r), "cannot read this rank's trace spans");
      else
        all += ",\n" + part.str();
    }
    all += "\n]}\n";
    if (!merged)
      merged = writeFileDurably(path, all.data(), all.size());
    for (int r = 1; r < ranks; ++r)
      std::remove(tracePart(path, r).c_str());
  }
  return agreeAcrossRanks(groups, std::move(merged), "writing the trace");
}

} // namespace dsv3::rt
