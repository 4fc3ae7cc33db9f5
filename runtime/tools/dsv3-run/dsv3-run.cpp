//===- dsv3-run.cpp - run an ahead-of-time artifact, without LLVM ---------===//
//
// The runtime-only runner: loads an artifact written by `dsv3c compile
// --emit=artifact` (a shared object and its manifest) and runs it on weights
// and tokens, as `dsv3c eval|grad|train` would with the JIT, with the same
// outputs. It links the runtime core only: no LLVM, no MLIR. Training
// defaults are those of a hub directory (no clipping); a .toml recipe's
// [train] table is not recorded in the artifact yet, so pass its values as
// flags.
//
//   dsv3-run DIR eval  --weights MODEL --tokens T.safetensors -o OUT.safetensors
//   dsv3-run DIR grad  --weights MODEL --tokens T.safetensors -o OUT.safetensors
//   dsv3-run DIR train --weights MODEL (--tokens T | --corpus FILE) [--steps N ...]
//
//===----------------------------------------------------------------------===//
#include "runtime/exec/SharedObject.h"
#include "runtime/io/Outputs.h"
#include "runtime/io/Parameters.h"
#include "runtime/io/Safetensors.h"
#include "runtime/train/Data.h"
#include "runtime/train/Trainer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <tbb/global_control.h>

#include <cstdio>
#include <malloc.h>
#include <optional>

using namespace dsv3::rt;
using nlohmann::json;

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "dsv3-run: error: %s\n", message.c_str());
  return 1;
}
int fail(const Error &e) { return fail(e.message()); }

/// What the compiler recorded about the artifact.
struct ArtifactInfo {
  std::string mode;
  int64_t batch = 0, seq = 0;
  bool packed = false, bf16Moments = false;
  std::map<std::string, std::vector<std::vector<int64_t>>> outputShapes;
  std::string configJson;
};

/// Whether this CPU has an instruction-set extension the compiler may have
/// used (LLVM's feature names); extensions not listed here are not checked.
bool cpuSupports(const std::string &feature) {
#if defined(__x86_64__)
  static const std::pair<const char *, bool> known[] = {
      {"avx", __builtin_cpu_supports("avx")},
      {"avx2", __builtin_cpu_supports("avx2")},
      {"fma", __builtin_cpu_supports("fma")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512dq", __builtin_cpu_supports("avx512dq")},
      {"avx512bf16", __builtin_cpu_supports("avx512bf16")},
  };
  for (auto [name, supported] : known)
    if (feature == name)
      return supported;
#endif
  return true;
}

/// The vocabulary size from the recorded hub config (0 when absent).
int64_t vocabularySize(const ArtifactInfo &info) {
  json config = json::parse(info.configJson, nullptr, false);
  if (!config.is_object() || !config.contains("vocab_size") ||
      !config["vocab_size"].is_number_integer())
    return 0;
  return config["vocab_size"].get<int64_t>();
}

Expected<ArtifactInfo> readInfo(const SharedObjectExecutable &exe, const std::string &dir) {
  json extra = json::parse(exe.extraJson(), nullptr, /*allow_exceptions=*/false);
  auto bad = [&] { return fileError(dir + "/manifest.json", "no valid artifact description"); };
  if (!extra.is_object())
    return bad();
  ArtifactInfo info;
  for (const char *key : {"mode", "config_json"})
    if (!extra.contains(key) || !extra[key].is_string())
      return bad();
  for (const char *key : {"batch", "seq"})
    if (!extra.contains(key) || !extra[key].is_number_integer() || extra[key].get<int64_t>() <= 0)
      return bad();
  for (const char *key : {"packed", "bf16_moments"})
    if (extra.contains(key) && !extra[key].is_boolean())
      return bad();
  if (!extra.contains("output_shapes") || !extra["output_shapes"].is_object())
    return bad();
  info.mode = extra["mode"].get<std::string>();
  info.configJson = extra["config_json"].get<std::string>();
  info.batch = extra["batch"].get<int64_t>();
  info.seq = extra["seq"].get<int64_t>();
  info.packed = extra.value("packed", false);
  info.bf16Moments = extra.value("bf16_moments", false);
  for (auto &[entry, shapes] : extra["output_shapes"].items()) {
    if (!shapes.is_array())
      return bad();
    auto &list = info.outputShapes[entry];
    for (const json &shape : shapes) {
      if (!shape.is_array())
        return bad();
      list.emplace_back();
      for (const json &d : shape) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0)
          return bad();
        list.back().push_back(d.get<int64_t>());
      }
    }
  }
  // Every entry point's outputs have a shape, one per output.
  for (const EntryPoint &e : exe.entries()) {
    auto it = info.outputShapes.find(e.name);
    if (e.name != "adamw_step" &&
        (it == info.outputShapes.end() || it->second.size() != e.outputs.size()))
      return fileError(dir + "/manifest.json",
                       "the output shapes do not match entry point '" + e.name + "'");
  }
  if (vocabularySize(info) <= 0)
    return fileError(dir + "/manifest.json", "the recorded config has no valid vocab_size");
  if (extra.contains("target_features") && extra["target_features"].is_array())
    for (const json &f : extra["target_features"])
      if (f.is_string() && !cpuSupports(f.get<std::string>()))
        return fileError(dir, "was compiled for a CPU with " + f.get<std::string>() +
                                  ", which this CPU lacks (recompile the artifact here)");
  return info;
}

Error checkShape(const DataSource &data, const ArtifactInfo &info, const std::string &dir) {
  if (data.batch() != info.batch || data.seqLen() != info.seq)
    return Error::failure(data.describe() + ": batch is " + std::to_string(data.batch()) + "x" +
                          std::to_string(data.seqLen()) + " but " + dir + " was compiled for " +
                          std::to_string(info.batch) + "x" + std::to_string(info.seq));
  if ((data.segments() != nullptr) != info.packed)
    return Error::failure(data.describe() + (info.packed ? ": has no segment_ids but "
                                                         : ": has segment_ids but ") +
                          dir + (info.packed ? " was compiled for packed rows"
                                             : " was compiled for single sequences"));
  return Error::success();
}

Error loadWeights(const std::string &weights, const Executable &exe, std::vector<float> &params) {
  auto store = WeightStore::open(weights);
  if (!store)
    return store.takeError();
  return loadParameters(**store, exe.layout(), params);
}

struct Options {
  std::string dir, command, weights, tokens, corpus, output;
  unsigned threads = 0;
  TrainConfig train;
  std::string betas = "0.9,0.95";
  int64_t decayStart = -1;
};

int runOnTokens(const Options &o, const SharedObjectExecutable &exe, const ArtifactInfo &info) {
  bool gradient = o.command == "grad";
  std::string entryName = gradient ? "forward_grad" : "forward";
  const EntryPoint *entry = exe.entry(entryName);
  if (!entry || (gradient ? info.mode == "eval" : info.mode != "eval"))
    return fail(o.dir + ": a " + info.mode + " artifact cannot run '" + o.command +
                "' (compile it with --mode=" + (gradient ? "grad" : "eval") + ")");
  if (o.tokens.empty() || o.output.empty())
    return fail(o.command + " needs --tokens T.safetensors and -o OUT.safetensors");
  auto data = openFixedBatch(o.tokens, vocabularySize(info));
  if (!data)
    return fail(data.error());
  if (Error e = checkShape(**data, info, o.dir))
    return fail(e);
  std::vector<float> params;
  if (Error e = loadWeights(o.weights, exe, params))
    return fail(e);
  std::vector<int64_t> ids;
  (*data)->fill(0, 0, 0, ids);
  std::vector<int64_t> shape{info.batch, info.seq};
  std::vector<BufferArg> inputs{{ids.data(), shape}};
  if (const std::vector<int64_t> *segments = (*data)->segments())
    inputs.push_back({const_cast<int64_t *>(segments->data()), shape});
  const auto &shapes = info.outputShapes.at(entryName);
  OutputBuffers buffers(*entry, shapes);
  if (Error e = exe.call(entryName, params.data(), inputs, buffers.args))
    return fail(e);
  std::string summary;
  if (Error e = writeOutputs(*entry, shapes, buffers, o.output, "dsv3-run " + o.command, summary))
    return fail(e);
  std::fputs(summary.c_str(), stdout);
  return 0;
}

int runTrain(Options o, const SharedObjectExecutable &exe, const ArtifactInfo &info) {
  if (info.mode != "train-step" || !exe.entry("forward_grad") || !exe.entry("adamw_step"))
    return fail(o.dir + ": a " + info.mode +
                " artifact cannot train (compile it with --mode=train-step)");
  TrainConfig &c = o.train;
  size_t comma = o.betas.find(',');
  try {
    if (comma == std::string::npos)
      throw std::invalid_argument("");
    c.beta1 = std::stod(o.betas.substr(0, comma));
    c.beta2 = std::stod(o.betas.substr(comma + 1));
  } catch (const std::exception &) {
    c.beta1 = -1;
  }
  if (c.beta1 < 0 || c.beta1 >= 1 || c.beta2 < 0 || c.beta2 >= 1)
    return fail("--betas must be two numbers in [0, 1) separated by a comma, got '" + o.betas +
                "'");
  if (c.steps <= 0 || c.gradAccumulation <= 0 || c.lr <= 0)
    return fail("--steps, --grad-accum and --lr must be positive");
  if (o.decayStart >= 0)
    c.decayStart = o.decayStart;
  c.bf16Moments = info.bf16Moments;
  c.configJson = info.configJson;
  if (c.plotPath.empty() && !c.savePath.empty())
    c.plotPath = c.savePath + ".loss.svg";
  std::unique_ptr<DataSource> data;
  if (!o.tokens.empty()) {
    auto fixed = openFixedBatch(o.tokens, vocabularySize(info));
    if (!fixed)
      return fail(fixed.error());
    data = std::move(*fixed);
  } else if (!o.corpus.empty()) {
    auto corpus = openByteCorpus(o.corpus, vocabularySize(info), info.batch, info.seq);
    if (!corpus)
      return fail(corpus.error());
    data = std::move(*corpus);
  } else {
    return fail("train needs --tokens T.safetensors or --corpus FILE");
  }
  if (Error e = checkShape(*data, info, o.dir))
    return fail(e);
  if (Error e = checkSaveTarget(c.savePath))
    return fail(e);
  std::vector<float> params;
  if (Error e = loadWeights(o.weights, exe, params))
    return fail(e);
  CompiledTraining compiled{&exe, &exe, info.outputShapes.at("forward_grad")};
  if (Error e = train(c, compiled, *data, params))
    return fail(e);
  if (!c.savePath.empty())
    std::printf("checkpoint: %s\n", c.savePath.c_str());
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  // As dsv3c: keep freed blocks in the heap, never trim it (compiled steps
  // allocate their activations afresh on every call).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, -1);

  Options o;
  TrainConfig &t = o.train;
  t.gradClip = 0; // as dsv3c on a hub directory: no recipe, no clipping
  CLI::App app{"dsv3-run: run an ahead-of-time dsv3c artifact (no LLVM or MLIR needed)"};
  app.add_option("DIR", o.dir, "Artifact directory (dsv3c compile --emit=artifact -o DIR)")
      ->required();
  app.add_option("COMMAND", o.command, "eval, grad or train")
      ->required()
      ->check(CLI::IsMember({"eval", "grad", "train"}));
  app.add_option("--weights", o.weights, "Model directory or checkpoint (safetensors)")
      ->required();
  app.add_option("--tokens", o.tokens, "input_ids [batch, seq] (and segment_ids)");
  app.add_option("-o", o.output, "Output file (eval, grad)");
  app.add_option("--num-threads", o.threads, "Worker threads (0: all cores)");
  app.add_option("--corpus", o.corpus, "Training text, byte-level tokens (train)");
  app.add_option("--steps", t.steps, "Optimizer steps");
  app.add_option("--lr", t.lr, "Peak learning rate");
  app.add_option("--betas", o.betas, "AdamW betas: b1,b2");
  app.add_option("--eps", t.eps, "AdamW epsilon");
  app.add_option("--weight-decay", t.weightDecay, "Decoupled weight decay");
  app.add_option("--grad-clip", t.gradClip, "Global gradient-norm clip (0 disables)");
  app.add_option("--warmup-steps", t.warmupSteps, "Linear warm-up steps");
  app.add_option("--decay-start", o.decayStart, "Cosine decay from this step");
  app.add_option("--min-lr-ratio", t.minLrRatio, "Final learning rate / peak");
  app.add_option("--bias-update", t.biasUpdateSpeed, "Routing-bias update speed gamma");
  app.add_option("--grad-accum", t.gradAccumulation, "Micro-batches per step");
  app.add_option("--seed", t.seed, "Data sampling seed");
  app.add_option("--log-json", t.logJsonPath, "JSON-lines metrics");
  app.add_option("--plot", t.plotPath, "Loss curve SVG");
  app.add_option("--save", t.savePath, "Write a checkpoint DIR at the end");
  app.add_option("--resume", t.resumePath, "Continue from a checkpoint DIR");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    return fail(e.what());
  }
  std::optional<tbb::global_control> threadLimit;
  if (o.threads > 0)
    threadLimit.emplace(tbb::global_control::max_allowed_parallelism, o.threads);

  auto exe = SharedObjectExecutable::open(o.dir);
  if (!exe)
    return fail(exe.error());
  auto info = readInfo(**exe, o.dir);
  if (!info)
    return fail(info.error());
  if (o.command == "train")
    return runTrain(o, **exe, *info);
  return runOnTokens(o, **exe, *info);
}
