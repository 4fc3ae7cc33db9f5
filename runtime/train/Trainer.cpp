//===- Trainer.cpp - the training loop ------------------------------------===//
#include "runtime/train/Trainer.h"

#include "runtime/train/Checkpoint.h"
#include "runtime/pipeline/CommTransport.h"
#include "runtime/pipeline/Executor.h"
#include "runtime/support/File.h"
#include "runtime/support/Trace.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unistd.h>

namespace dsv3::rt {

double learningRate(const TrainConfig &c, int64_t step) {
  if (c.warmupSteps > 0 && step <= c.warmupSteps)
    return c.lr * static_cast<double>(step) / c.warmupSteps;
  if (!c.decayStart || step <= *c.decayStart || c.steps <= *c.decayStart)
    return c.lr;
  double progress = static_cast<double>(step - *c.decayStart) /
                    static_cast<double>(c.steps - *c.decayStart);
  double minLr = c.lr * c.minLrRatio;
  return minLr + (c.lr - minLr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

double updateRoutingBias(const std::vector<int64_t> &load, double gamma, float *bias) {
  if (load.empty())
    return 0;
  double total = 0;
  for (int64_t l : load)
    total += l;
  double mean = total / load.size();
  for (size_t e = 0; e < load.size(); ++e) {
    double d = mean - load[e];
    bias[e] += static_cast<float>(gamma * ((d > 0) - (d < 0)));
  }
  int64_t maxLoad = *std::max_element(load.begin(), load.end());
  return mean > 0 ? maxLoad / mean : 0;
}

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

/// printf into a std::string.
std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char *fmt, ...) {
  va_list args, again;
  va_start(args, fmt);
  va_copy(again, args);
  int n = std::vsnprintf(nullptr, 0, fmt, args);
  va_end(args);
  std::string out(std::max(n, 0), '\0');
  std::vsnprintf(out.data(), out.size() + 1, fmt, again);
  va_end(again);
  return out;
}

/// Where each output of forward_grad goes.
struct OutputRoles {
  int loss = -1, mtpLoss = -1, balanceLoss = -1, totalLoss = -1;
  std::vector<std::pair<int, int64_t>> grads;     // output -> slot offset
  struct Routing {
    int output;
    int64_t biasOffset, experts;
    std::string bias;
  };
  std::vector<Routing> routing;

  /// Records an `expert_ids` output that names its layer's routing bias.
  Error addRouting(const OutputSlot &o, int out, const ParamLayout &layout) {
    const ParamSlot *s = layout.find(o.param);
    if (!s || s->role != "routing_bias")
      return Error::failure("expert choices '" + o.name + "' name '" + o.param +
                            "', which is not a routing bias");
    routing.push_back({out, s->offset, s->numElements(), o.param});
    return Error::success();
  }
};

/// The step's scalar losses, summed over micro-batches (then averaged).
struct StepLosses {
  double loss = 0, mtpLoss = 0, balanceLoss = 0, totalLoss = 0;
};

Expected<OutputRoles> assignRoles(const EntryPoint &entry, const ParamLayout &layout) {
  OutputRoles r;
  for (size_t i = 0; i < entry.outputs.size(); ++i) {
    const OutputSlot &o = entry.outputs[i];
    int out = static_cast<int>(i);
    if (o.role == "loss")
      r.loss = out;
    else if (o.role == "mtp_loss")
      r.mtpLoss = out;
    else if (o.role == "balance_loss")
      r.balanceLoss = out;
    else if (o.role == "total_loss")
      r.totalLoss = out;
    else if (o.role == "gradient") {
      const ParamSlot *s = layout.find(o.param);
      if (!s)
        return Error::failure("gradient '" + o.name + "' of unknown parameter '" + o.param + "'");
      r.grads.push_back({out, s->offset});
    } else if (o.role == "expert_ids" && !o.param.empty()) {
      if (Error e = r.addRouting(o, out, layout))
        return e;
    }
  }
  if (r.loss < 0 || r.totalLoss < 0)
    return Error::failure("forward_grad lacks loss/total_loss outputs");
  return r;
}

/// The same for a pipelined step, whose chunks the executor runs (it sums
/// their gradients, losses and expert loads): which losses exist and the
/// routed layers, once each.
Expected<OutputRoles> assignPipelineRoles(const Executable &exe, const ParamLayout &layout) {
  if (!exe.entry("stage0_forward"))
    return Error::failure("a pipelined step needs the pipeline chunks (stage0_forward, ...): "
                          "compile it with pipeline stages");
  OutputRoles r;
  for (const EntryPoint &e : exe.entries())
    for (const OutputSlot &o : e.outputs) {
      if (o.role == "mtp_loss")
        r.mtpLoss = 0;
      else if (o.role == "balance_loss")
        r.balanceLoss = 0;
      else if (o.role == "expert_ids" && !o.param.empty() &&
               std::none_of(r.routing.begin(), r.routing.end(),
                            [&](const OutputRoles::Routing &x) { return x.bias == o.param; }))
        if (Error err = r.addRouting(o, -1, layout))
          return err;
    }
  return r;
}

/// One micro-batch of a pipelined step: this rank's program of the
/// schedule over the replica's `rows` (split into the schedule's
/// micro-batches). Adds this rank's stages' gradients, loss parts and
/// expert loads; the pipeline group's sum is the step's.
Error runPipelined(const PipelineSchedule &schedule, ProcessGroups &job,
                   PipelineTransport &transport, Session &session,
                   const std::vector<int64_t> &ids, const std::vector<int64_t> *segments,
                   int64_t rows, int64_t seqLen, const OutputRoles &roles,
                   std::vector<float> &grads, StepLosses &losses,
                   std::vector<std::vector<int64_t>> &loads) {
  PipelineRank program(schedule, static_cast<int>(job.pipelineRank()), session.executable(),
                       session.parameters().data(),
                       splitRows(ids.data(), segments ? segments->data() : nullptr, rows, seqLen,
                                 schedule.microBatches),
                       transport);
  if (Error e = program.runToEnd())
    return e;
  const std::vector<float> &g = program.gradients();
  for (size_t k = 0; k < g.size(); ++k)
    grads[k] += g[k];
  auto part = [&](const char *role) {
    auto it = program.losses().find(role);
    return it == program.losses().end() ? 0.0 : it->second;
  };
  losses.loss += part("loss");
  losses.mtpLoss += part("mtp_loss");
  losses.balanceLoss += part("balance_loss");
  losses.totalLoss += part("total_loss");
  for (size_t r = 0; r < roles.routing.size(); ++r) {
    loads[r].resize(roles.routing[r].experts, 0);
    auto it = program.expertLoads().find(roles.routing[r].bias);
    if (it != program.expertLoads().end())
      for (size_t x = 0; x < it->second.size() && x < loads[r].size(); ++x)
        loads[r][x] += it->second[x];
  }
  return Error::success();
}

/// Sums each pipeline rank's parts of the step's losses and expert loads
/// (every rank then holds the replica's).
Error sumOverPipeline(ProcessGroups &job, StepLosses &losses,
                      std::vector<std::vector<int64_t>> &loads) {
  double *values[] = {&losses.loss, &losses.mtpLoss, &losses.balanceLoss, &losses.totalLoss};
  float parts[4];
  for (int i = 0; i < 4; ++i)
    parts[i] = static_cast<float>(*values[i]);
  if (Error e = Communicator::complete(job.pipeline().allReduceSum(ElementType::F32, parts, 4)))
    return e;
  for (int i = 0; i < 4; ++i)
    *values[i] = parts[i];
  for (std::vector<int64_t> &l : loads)
    if (Error e = Communicator::complete(
            job.pipeline().allReduceSum(ElementType::I64, l.data(), l.size())))
      return e;
  return Error::success();
}

/// A loss curve as SVG.
Error writePlot(const std::string &path, const std::vector<double> &losses, int64_t firstStep) {
  if (losses.empty())
    return Error::success();
  double lo = *std::min_element(losses.begin(), losses.end());
  double hi = *std::max_element(losses.begin(), losses.end());
  if (hi - lo < 1e-9)
    hi = lo + 1;
  const double w = 640, h = 400, left = 60, right = 20, top = 20, bottom = 50;
  std::string svg;
  svg += format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\">\n", w, h);
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += format("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
                left, h - bottom, w - right, h - bottom);
  svg += format("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
                left, top, left, h - bottom);
  svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"";
  size_t n = losses.size();
  for (size_t i = 0; i < n; ++i) {
    double x = left + (w - left - right) * (n == 1 ? 0.5 : double(i) / (n - 1));
    double y = top + (h - top - bottom) * (1 - (losses[i] - lo) / (hi - lo));
    svg += format("%.1f,%.1f ", x, y);
  }
  svg += "\"/>\n";
  svg += format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">%.3f</text>\n", 2.0, top + 4, hi);
  svg += format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">%.3f</text>\n", 2.0, h - bottom, lo);
  svg += format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">step %lld</text>\n", left, h - 20,
                (long long)firstStep);
  svg += format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"end\">step %lld</text>\n",
                w - right, h - 20, (long long)(firstStep + n - 1));
  svg += format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"14\" text-anchor=\"middle\">training loss</text>\n",
                w / 2, h - 5);
  svg += "</svg>\n";
  return writeFileDurably(path, svg.data(), svg.size());
}

std::string formatDuration(double seconds) {
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  snprintf(buf, sizeof(buf), "%02lld:%02lld:%02lld", (long long)(s / 3600),
           (long long)(s / 60 % 60), (long long)(s % 60));
  return buf;
}

/// The job's mean of a per-replica value.
Expected<double> replicaMean(ProcessGroups &job, double v) {
  float x = static_cast<float>(v);
  if (Error e = Communicator::complete(job.data().allReduceSum(ElementType::F32, &x, 1)))
    return e;
  return double(x) / static_cast<double>(job.plan().data);
}

} // namespace

std::string rankLogPath(const std::string &logPath, int rank) {
  std::string stem = logPath;
  const std::string ext = ".jsonl";
  if (stem.size() > ext.size() && stem.compare(stem.size() - ext.size(), ext.size(), ext) == 0)
    stem.resize(stem.size() - ext.size());
  return stem + ".rank-" + std::to_string(rank) + ext;
}

Error train(const TrainConfig &c, Session &session, const DataSource &data, ProcessGroups *job,
            const PipelineSchedule *pipeline) {
  if (job && job->plan().single())
    job = nullptr;
  if (pipeline && (!job || job->plan().pipeline != pipeline->ranks))
    return Error::failure("a pipeline schedule of " +
                          std::to_string(pipeline ? pipeline->ranks : 0) +
                          " ranks needs a job with as many pipeline ranks");
  bool root = !job || job->isRoot();
  const OptimizerShard &shard = session.shard();
  if (shard.count > 1 && (!job || shard.count != job->plan().data))
    return Error::failure("the optimizer state is in " + std::to_string(shard.count) +
                          " shards but the job has " +
                          std::to_string(job ? job->plan().data : 1) + " data-parallel ranks");
  const ParamLayout &layout = session.layout();
  const EntryPoint *entry = session.executable().entry("forward_grad");
  if ((!entry && !pipeline) || !session.trains())
    return Error::failure("training needs forward_grad and adamw_step");
  auto roles = pipeline ? assignPipelineRoles(session.executable(), layout)
                        : assignRoles(*entry, layout);
  if (!roles)
    return roles.takeError();
  // Padded to whole optimizer shards: a ZeRO-1 job reduce-scatters it.
  int64_t total = static_cast<int64_t>(session.parameters().size());
  std::vector<float> grads(shard.count * shard.size(total)), shardGrads;
  int64_t startStep = 0;
  if (!c.resumePath.empty()) {
    auto step = loadCheckpoint(c.resumePath, session);
    if (!step)
      return step.takeError();
    startStep = *step;
  }
  OutputBuffers *outputs = pipeline ? nullptr : &session.outputs("forward_grad");
  // One transport (and its progress thread) for the whole run: every
  // micro-step's program flushes its sends before it ends.
  std::optional<CommunicatorTransport> transport;
  if (pipeline)
    transport.emplace(job->pipeline());

  std::ofstream log;
  if (!c.logJsonPath.empty() && root) {
    log.open(c.logJsonPath, c.resumePath.empty() ? std::ios::trunc : std::ios::app);
    if (!log)
      return fileError(c.logJsonPath, std::strerror(errno));
  }
  // Each rank's own metrics.
  std::ofstream rankLog;
  if (!c.logJsonPath.empty() && job) {
    std::string path = rankLogPath(c.logJsonPath, job->world().rank());
    rankLog.open(path, c.resumePath.empty() ? std::ios::trunc : std::ios::app);
    if (!rankLog)
      return fileError(path, std::strerror(errno));
  }
  if (!c.tracePath.empty())
    if (Error e = startJobTrace(job))
      return e;
  bool tty = ::isatty(STDERR_FILENO);
  std::vector<int64_t> ids, segmentRows;
  std::vector<double> curve;
  // The compiled step's batch: one replica's rows.
  int64_t rows = job ? data.batch() / job->plan().data : data.batch();
  int64_t tokensPerStep = data.batch() * data.seqLen() * c.gradAccumulation;
  auto started = Clock::now();

  for (int64_t step = startStep + 1; step <= c.steps; ++step) {
    auto stepStart = Clock::now();
    CommStats commBefore = job ? job->commTotals() : CommStats{};
    std::fill(grads.begin(), grads.end(), 0.f);
    StepLosses losses;
    // Expert loads per routed layer, over all micro-batches of the step.
    std::vector<std::vector<int64_t>> loads(roles->routing.size());
    for (int64_t micro = 0; micro < c.gradAccumulation; ++micro) {
      data.fill(c.seed, step, micro, ids);
      const std::vector<int64_t> *segs = data.segments();
      if (job) {
        ids = replicaRows(ids, data.batch(), data.seqLen(), *job);
        if (segs)
          segs = &(segmentRows = replicaRows(*segs, data.batch(), data.seqLen(), *job));
      }
      if (pipeline) {
        if (Error e = runPipelined(*pipeline, *job, *transport, session, ids, segs, rows,
                                   data.seqLen(), *roles, grads, losses, loads))
          return e;
        continue;
      }
      std::vector<BufferArg> inputs{{ids.data(), {rows, data.seqLen()}}};
      if (segs)
        inputs.push_back({const_cast<int64_t *>(segs->data()), {rows, data.seqLen()}});
      {
        TraceScope span("forward_grad", TraceLane::Compute);
        if (Error e = session.run("forward_grad", inputs))
          return e;
      }
      losses.loss += outputs->f32(roles->loss)[0];
      losses.totalLoss += outputs->f32(roles->totalLoss)[0];
      if (roles->mtpLoss >= 0)
        losses.mtpLoss += outputs->f32(roles->mtpLoss)[0];
      if (roles->balanceLoss >= 0)
        losses.balanceLoss += outputs->f32(roles->balanceLoss)[0];
      for (auto [out, offset] : roles->grads) {
        const float *g = outputs->f32(out);
        for (int64_t k = 0, n = outputs->tensors[out].numElements(); k < n; ++k)
          grads[offset + k] += g[k];
      }
      for (size_t r = 0; r < roles->routing.size(); ++r) {
        const OutputRoles::Routing &role = roles->routing[r];
        loads[r].resize(role.experts, 0);
        const int64_t *ids = outputs->i64(role.output);
        for (int64_t k = 0, n = outputs->tensors[role.output].numElements(); k < n; ++k)
          if (ids[k] >= 0 && ids[k] < role.experts)
            ++loads[r][ids[k]];
      }
    }
    double inv = 1.0 / c.gradAccumulation;
    auto &[loss, mtpLoss, balanceLoss, totalLoss] = losses;
    for (double *v : {&loss, &mtpLoss, &balanceLoss, &totalLoss})
      *v *= inv;
    double sq = 0;
    for (float &g : grads) {
      g *= inv;
      sq += double(g) * g;
    }
    // Tokens this rank's experts received in its replica, per routed layer.
    std::vector<int64_t> rankLoad;
    if (job)
      for (const std::vector<int64_t> &l : loads) {
        int64_t owned = static_cast<int64_t>(l.size()) / job->plan().expert, sum = 0;
        for (int64_t x = job->expertRank() * owned; x < (job->expertRank() + 1) * owned; ++x)
          sum += l[x];
        rankLoad.push_back(sum);
      }
    // Each pipeline rank computed its stages' parts.
    if (pipeline)
      if (Error e = sumOverPipeline(*job, losses, loads))
        return e;
    if (job) {
      auto jobSq = reduceGradients(*job, layout, shard, grads, shardGrads);
      if (!jobSq)
        return jobSq.takeError();
      sq = *jobSq;
      for (double *v : {&loss, &mtpLoss, &balanceLoss, &totalLoss}) {
        auto mean = replicaMean(*job, *v);
        if (!mean)
          return mean.takeError();
        *v = *mean;
      }
      // Routing runs on a replica's whole batch on each of its ranks: the
      // job's loads are the sum over replicas.
      for (std::vector<int64_t> &l : loads)
        if (Error e = Communicator::complete(
                job->data().allReduceSum(ElementType::I64, l.data(), l.size())))
          return e;
    }
    double gradNorm = std::sqrt(sq);
    // torch.nn.utils.clip_grad_norm_ semantics.
    double clip = c.gradClip > 0 ? std::min(1.0, c.gradClip / (gradNorm + 1e-6)) : 1.0;
    double lr = learningRate(c, step);
    float hyper[kNumAdamWHyper];
    hyper[kLearningRate] = lr;
    hyper[kBeta1] = c.beta1;
    hyper[kBeta2] = c.beta2;
    hyper[kEpsilon] = c.eps;
    hyper[kWeightDecay] = c.weightDecay;
    hyper[kBiasCorrection1] = 1 - std::pow(c.beta1, step);
    hyper[kBiasCorrection2] = 1 - std::pow(c.beta2, step);
    hyper[kGradScale] = clip;
    // Routing biases keep their values through the step (the session
    // holds them), then follow the load-balancing rule
    // b += gamma sign(mean - load).
    {
      TraceScope span("optimizer_step", TraceLane::Compute);
      if (Error e = session.optimizerStep(job ? shardGrads : grads, hyper))
        return e;
    }
    std::vector<float> &params = session.parameters();
    if (shard.count > 1) {
      // ZeRO-1: every data-parallel rank stepped its slice; the gradient
      // buffer is free to collect them.
      if (Error e = Communicator::complete(job->data().allGather(
              ElementType::F32, session.shardParameters().data(), grads.data(),
              shard.size(total))))
        return e;
      std::copy_n(grads.begin(), total, params.begin());
    }
    double imbalance = 0;
    for (size_t r = 0; r < roles->routing.size(); ++r)
      imbalance = std::max(imbalance,
                           updateRoutingBias(loads[r], c.biasUpdateSpeed,
                                             params.data() + roles->routing[r].biasOffset));

    double stepSeconds = std::chrono::duration<double>(Clock::now() - stepStart).count();
    double tokensPerSecond = tokensPerStep / std::max(stepSeconds, 1e-9);
    curve.push_back(loss);
    if (log.is_open()) {
      nlohmann::json o = {{"step", step},
                          {"loss", loss},
                          {"total_loss", totalLoss},
                          {"lr", lr},
                          {"grad_norm", gradNorm},
                          {"tokens_per_s", tokensPerSecond},
                          {"load_imbalance", imbalance}};
      if (roles->mtpLoss >= 0)
        o["mtp_loss"] = mtpLoss;
      if (roles->balanceLoss >= 0)
        o["balance_loss"] = balanceLoss;
      log << o.dump() << "\n";
      log.flush();
    }
    if (rankLog.is_open()) {
      CommStats now = job->commTotals();
      nlohmann::json o = {{"step", step},
                          {"rank", job->world().rank()},
                          {"data_rank", job->dataRank()},
                          {"expert_rank", job->expertRank()},
                          {"all_to_all_bytes_sent", now.bytesSent - commBefore.bytesSent},
                          {"all_to_all_bytes_received", now.bytesReceived - commBefore.bytesReceived},
                          {"comm_seconds", now.waitSeconds - commBefore.waitSeconds},
                          {"step_seconds", stepSeconds},
                          {"expert_load", rankLoad}};
      rankLog << o.dump() << "\n";
      rankLog.flush();
    }
    double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    double eta = elapsed / (step - startStep) * (c.steps - step);
    std::string line = format("step %lld/%lld  loss %.4f  lr %.2E  |g| %.3f  imbalance %.2f  "
                              "%.0f tok/s  ETA %s",
                              (long long)step, (long long)c.steps, loss, lr, gradNorm, imbalance,
                              tokensPerSecond, formatDuration(eta).c_str());
    if (!root) {
      // Only rank 0 reports.
    } else if (tty) {
      int width = 24, filled = static_cast<int>(width * step / c.steps);
      std::fprintf(stderr, "\r[%s%s] %s\x1b[K%s", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), line.c_str(),
                   step == c.steps ? "\n" : "");
      std::fflush(stderr);
    } else {
      std::fprintf(stdout, "%s\n", line.c_str());
      std::fflush(stdout);
    }
    if (!c.savePath.empty() && step == c.steps)
      if (Error e = saveCheckpoint(c.savePath, {step, c.seed, c.configJson, c.checkpointFiles},
                                   session, job))
        return e;
  }
  if (!c.tracePath.empty())
    if (Error e = writeJobTrace(c.tracePath, job))
      return e;
  if (!c.plotPath.empty() && root)
    if (Error e = writePlot(c.plotPath, curve, startStep + 1))
      return e;
  return Error::success();
}

} // namespace dsv3::rt
