//===- Trainer.cpp - the training loop ------------------------------------===//
#include "runtime/train/Trainer.h"

#include "frontends/import/Optimizer.h"
#include "frontends/import/ParamLoader.h"
#include "frontends/model/Safetensors.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cmath>
#include <fcntl.h>
#include <unistd.h>

namespace dsv3 {

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

double updateRoutingBias(llvm::ArrayRef<int64_t> load, double gamma,
                         float *bias) {
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

llvm::Error pathError(const std::string &path, const llvm::Twine &msg) {
  return llvm::createStringError(path + ": " + msg.str());
}

/// Where each output of forward_grad goes.
struct OutputRoles {
  int loss = -1, mtpLoss = -1, balanceLoss = -1, totalLoss = -1;
  std::vector<std::pair<int, int64_t>> grads;     // output -> slot offset
  struct Routing {
    int output;
    int64_t biasOffset, experts;
  };
  std::vector<Routing> routing;
  std::vector<std::pair<int64_t, int64_t>> frozen; // bias slots (offset, size)
};

llvm::Expected<OutputRoles> assignRoles(const EntryPoint &entry,
                                        const ParamLayout &layout) {
  OutputRoles r;
  auto slotOf = [&](llvm::StringRef name) -> const ParamSlot * {
    for (const ParamSlot &s : layout.slots)
      if (s.name == name)
        return &s;
    return nullptr;
  };
  for (const ParamSlot &s : layout.slots)
    if (llvm::StringRef(s.name).ends_with(".e_score_correction_bias"))
      r.frozen.push_back({s.offset, s.numElements()});
  for (auto [i, name] : llvm::enumerate(entry.outputs)) {
    llvm::StringRef n(name);
    if (n == "loss")
      r.loss = i;
    else if (n == "mtp_loss")
      r.mtpLoss = i;
    else if (n == "balance_loss")
      r.balanceLoss = i;
    else if (n == "total_loss")
      r.totalLoss = i;
    else if (n.consume_front("grad.")) {
      const ParamSlot *s = slotOf(n);
      if (!s)
        return llvm::createStringError("gradient of unknown parameter " + n.str());
      r.grads.push_back({static_cast<int>(i), s->offset});
    } else if (n.consume_front("topk_ids.")) {
      if (const ParamSlot *s = slotOf((n + ".e_score_correction_bias").str()))
        r.routing.push_back({static_cast<int>(i), s->offset, s->numElements()});
    }
  }
  if (r.loss < 0 || r.totalLoss < 0)
    return llvm::createStringError("forward_grad lacks loss/total_loss outputs");
  return r;
}

/// Writes `bytes` to `path` and flushes it to disk.
llvm::Error writeDurably(const std::string &path, llvm::StringRef bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return pathError(path, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      ::close(fd);
      return pathError(path, std::strerror(errno));
    }
    done += n;
  }
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok ? llvm::Error::success() : pathError(path, "fsync failed");
}

/// A hub-layout checkpoint written to a fresh directory, then renamed over
/// `dir`: a crash leaves either the previous checkpoint or the new one.
/// AdamW moments as raw bytes: FP32 or BF16 elements.
struct Moments {
  DType dtype;
  std::vector<uint8_t> m, v;
  Moments(bool bf16, size_t n)
      : dtype(bf16 ? DType::BF16 : DType::F32), m(n * dtypeSize(dtype), 0),
        v(n * dtypeSize(dtype), 0) {}
  size_t elementSize() const { return dtypeSize(dtype); }
};

llvm::Error saveCheckpoint(const TrainConfig &c, const ParamLayout &layout,
                           llvm::ArrayRef<float> params, const Moments &mv,
                           int64_t step) {
  std::string tmp = c.savePath + ".tmp-" + std::to_string(::getpid());
  llvm::sys::fs::remove_directories(tmp);
  if (std::error_code ec = llvm::sys::fs::create_directories(tmp))
    return pathError(tmp, ec.message());
  SafetensorsWriter model;
  addParameters(model, layout, params);
  model.setMetadata("format", "pt");
  if (llvm::Error e = model.write(tmp + "/model.safetensors"))
    return e;
  SafetensorsWriter opt;
  int64_t n = static_cast<int64_t>(params.size());
  opt.addTensor("exp_avg", mv.dtype, {n}, mv.m);
  opt.addTensor("exp_avg_sq", mv.dtype, {n}, mv.v);
  opt.setMetadata("step", std::to_string(step));
  opt.setMetadata("seed", std::to_string(c.seed));
  opt.setMetadata("param_count", std::to_string(n));
  if (llvm::Error e = opt.write(tmp + "/optimizer.safetensors"))
    return e;
  if (llvm::Error e = writeDurably(tmp + "/config.json", c.configJson))
    return e;
  std::string old = c.savePath + ".old-" + std::to_string(::getpid());
  bool hadOld = llvm::sys::fs::exists(c.savePath);
  if (hadOld)
    if (std::error_code ec = llvm::sys::fs::rename(c.savePath, old))
      return pathError(c.savePath, ec.message());
  if (std::error_code ec = llvm::sys::fs::rename(tmp, c.savePath))
    return pathError(c.savePath, ec.message());
  if (hadOld)
    llvm::sys::fs::remove_directories(old);
  return llvm::Error::success();
}

llvm::Expected<int64_t> loadCheckpoint(const TrainConfig &c,
                                       const ParamLayout &layout,
                                       std::vector<float> &params, Moments &mv) {
  auto store = WeightStore::open(c.resumePath + "/model.safetensors");
  if (!store)
    return store.takeError();
  if (llvm::Error e = loadParameters(**store, layout, params))
    return std::move(e);
  std::string optPath = c.resumePath + "/optimizer.safetensors";
  auto opt = SafetensorsFile::open(optPath);
  if (!opt)
    return opt.takeError();
  for (auto [name, dst] : {std::pair<const char *, std::vector<uint8_t> *>{"exp_avg", &mv.m},
                           {"exp_avg_sq", &mv.v}}) {
    const TensorInfo *t = (*opt)->lookup(name);
    if (!t || t->numElements() != static_cast<int64_t>(params.size()))
      return pathError(optPath, std::string("missing or mis-sized '") + name +
                                    "' for this model");
    if (t->dtype != mv.dtype)
      return pathError(optPath, std::string("'") + name + "' is " +
                                    dtypeName(t->dtype).str() + " but this run keeps " +
                                    dtypeName(mv.dtype).str() + " moments");
    std::memcpy(dst->data(), t->data, t->nbytes);
  }
  auto it = (*opt)->metadata().find("step");
  int64_t step;
  if (it == (*opt)->metadata().end() ||
      llvm::StringRef(it->second).getAsInteger(10, step) || step < 0)
    return pathError(optPath, "no valid 'step' in the metadata");
  return step;
}

/// A loss curve as SVG.
llvm::Error writePlot(const std::string &path, const std::vector<double> &losses,
                      int64_t firstStep) {
  if (losses.empty())
    return llvm::Error::success();
  double lo = *std::min_element(losses.begin(), losses.end());
  double hi = *std::max_element(losses.begin(), losses.end());
  if (hi - lo < 1e-9)
    hi = lo + 1;
  const double w = 640, h = 400, left = 60, right = 20, top = 20, bottom = 50;
  std::string svg;
  llvm::raw_string_ostream os(svg);
  os << llvm::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\">\n", w, h)
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << llvm::format("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
                     left, h - bottom, w - right, h - bottom)
     << llvm::format("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
                     left, top, left, h - bottom)
     << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"";
  size_t n = losses.size();
  for (size_t i = 0; i < n; ++i) {
    double x = left + (w - left - right) * (n == 1 ? 0.5 : double(i) / (n - 1));
    double y = top + (h - top - bottom) * (1 - (losses[i] - lo) / (hi - lo));
    os << llvm::format("%.1f,%.1f ", x, y);
  }
  os << "\"/>\n"
     << llvm::format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">%.3f</text>\n", 2.0, top + 4, hi)
     << llvm::format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">%.3f</text>\n", 2.0, h - bottom, lo)
     << llvm::format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">step %lld</text>\n", left, h - 20,
                     (long long)firstStep)
     << llvm::format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"end\">step %lld</text>\n",
                     w - right, h - 20, (long long)(firstStep + n - 1))
     << llvm::format("<text x=\"%.0f\" y=\"%.0f\" font-size=\"14\" text-anchor=\"middle\">training loss</text>\n",
                     w / 2, h - 5)
     << "</svg>\n";
  return writeDurably(path, svg);
}

std::string formatDuration(double seconds) {
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  snprintf(buf, sizeof(buf), "%02lld:%02lld:%02lld", (long long)(s / 3600),
           (long long)(s / 60 % 60), (long long)(s % 60));
  return buf;
}

} // namespace

llvm::Error train(const TrainConfig &c, const CompiledTraining &compiled,
                  const DataSource &data, std::vector<float> &params) {
  const ParamLayout &layout = compiled.grad->layout();
  const EntryPoint *entry = compiled.grad->entry("forward_grad");
  if (!entry || !compiled.adamw->entry("adamw_step"))
    return llvm::createStringError("training needs forward_grad and adamw_step");
  auto roles = assignRoles(*entry, layout);
  if (!roles)
    return roles.takeError();
  size_t p = params.size();
  std::vector<float> grads(p), next(p);
  Moments mv(c.bf16Moments, p), nextMv(c.bf16Moments, p);
  int64_t startStep = 0;
  if (!c.resumePath.empty()) {
    auto step = loadCheckpoint(c, layout, params, mv);
    if (!step)
      return step.takeError();
    startStep = *step;
  }

  OutputBuffers outputs(*entry, compiled.gradOutputShapes);
  auto &floats = outputs.floats;
  auto &ints = outputs.ints;

  std::unique_ptr<llvm::raw_fd_ostream> log;
  if (!c.logJsonPath.empty()) {
    std::error_code ec;
    log = std::make_unique<llvm::raw_fd_ostream>(
        c.logJsonPath, ec,
        c.resumePath.empty() ? llvm::sys::fs::OF_None : llvm::sys::fs::OF_Append);
    if (ec)
      return pathError(c.logJsonPath, ec.message());
  }
  bool tty = ::isatty(STDERR_FILENO);
  std::vector<int64_t> ids;
  std::vector<double> curve;
  int64_t tokensPerStep = data.batch() * data.seqLen() * c.gradAccumulation;
  auto started = Clock::now();

  for (int64_t step = startStep + 1; step <= c.steps; ++step) {
    auto stepStart = Clock::now();
    std::fill(grads.begin(), grads.end(), 0.f);
    double loss = 0, mtpLoss = 0, balanceLoss = 0, totalLoss = 0;
    // Expert loads per routed layer, over all micro-batches of the step.
    std::vector<std::vector<int64_t>> loads(roles->routing.size());
    for (int64_t micro = 0; micro < c.gradAccumulation; ++micro) {
      data.fill(c.seed, step, micro, ids);
      std::vector<BufferArg> inputs{{ids.data(), {data.batch(), data.seqLen()}}};
      if (const std::vector<int64_t> *segs = data.segments())
        inputs.push_back({const_cast<int64_t *>(segs->data()),
                          {data.batch(), data.seqLen()}});
      if (llvm::Error e = compiled.grad->call("forward_grad", params.data(),
                                              inputs, outputs.args))
        return e;
      loss += floats[roles->loss][0];
      totalLoss += floats[roles->totalLoss][0];
      if (roles->mtpLoss >= 0)
        mtpLoss += floats[roles->mtpLoss][0];
      if (roles->balanceLoss >= 0)
        balanceLoss += floats[roles->balanceLoss][0];
      for (auto [out, offset] : roles->grads)
        for (size_t k = 0; k < floats[out].size(); ++k)
          grads[offset + k] += floats[out][k];
      for (auto [r, role] : llvm::enumerate(roles->routing)) {
        loads[r].resize(role.experts, 0);
        for (int64_t id : ints[role.output])
          if (id >= 0 && id < role.experts)
            ++loads[r][id];
      }
    }
    double inv = 1.0 / c.gradAccumulation;
    loss *= inv;
    mtpLoss *= inv;
    balanceLoss *= inv;
    totalLoss *= inv;
    double sq = 0;
    for (float &g : grads) {
      g *= inv;
      sq += double(g) * g;
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
    int64_t n = static_cast<int64_t>(p);
    if (llvm::Error e = compiled.adamw->call(
            "adamw_step", params.data(),
            {{params.data(), {n}}, {grads.data(), {n}}, {mv.m.data(), {n}},
             {mv.v.data(), {n}}, {hyper, {kNumAdamWHyper}}},
            {{next.data(), {n}}, {nextMv.m.data(), {n}}, {nextMv.v.data(), {n}}}))
      return e;
    // Routing biases are not trained by gradient (nor decayed): keep them,
    // then apply the load-balancing update b += gamma sign(mean - load).
    size_t es = mv.elementSize();
    for (auto [offset, size] : roles->frozen) {
      std::copy_n(params.begin() + offset, size, next.begin() + offset);
      std::memset(nextMv.m.data() + offset * es, 0, size * es);
      std::memset(nextMv.v.data() + offset * es, 0, size * es);
    }
    params.swap(next);
    std::swap(mv, nextMv);
    double imbalance = 0;
    for (auto [r, role] : llvm::enumerate(roles->routing))
      imbalance = std::max(imbalance, updateRoutingBias(loads[r], c.biasUpdateSpeed,
                                                        params.data() + role.biasOffset));

    double stepSeconds = std::chrono::duration<double>(Clock::now() - stepStart).count();
    double tokensPerSecond = tokensPerStep / std::max(stepSeconds, 1e-9);
    curve.push_back(loss);
    if (log) {
      llvm::json::Object o{{"step", step},
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
      *log << llvm::json::Value(std::move(o)) << "\n";
      log->flush();
    }
    double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    double eta = elapsed / (step - startStep) * (c.steps - step);
    std::string line = llvm::formatv(
        "step {0}/{1}  loss {2:F4}  lr {3:E2}  |g| {4:F3}  imbalance {5:F2}  "
        "{6:F0} tok/s  ETA {7}", step, c.steps, loss, lr, gradNorm, imbalance,
        tokensPerSecond, formatDuration(eta));
    if (tty) {
      int width = 24, filled = static_cast<int>(width * step / c.steps);
      llvm::errs() << "\r[" << std::string(filled, '#')
                   << std::string(width - filled, ' ') << "] " << line << "\x1b[K";
      if (step == c.steps)
        llvm::errs() << "\n";
    } else {
      llvm::outs() << line << "\n";
    }
    if (!c.savePath.empty() && step == c.steps)
      if (llvm::Error e = saveCheckpoint(c, layout, params, mv, step))
        return e;
  }
  if (!c.plotPath.empty())
    if (llvm::Error e = writePlot(c.plotPath, curve, startStep + 1))
      return e;
  return llvm::Error::success();
}

} // namespace dsv3
