//===- dsv3-run.cpp - run an ahead-of-time artifact, without LLVM ---------===//
//
// The runtime-only runner: loads an artifact written by `dsv3c compile
// --emit=artifact` (a shared object and its manifest) and runs it on weights
// and tokens, as `dsv3c eval|grad|train` would with the JIT, with the same
// outputs. It links the runtime core only: no LLVM, no MLIR. Training
// starts from the recipe the compiler recorded in a train-step artifact (a
// .toml description's [train] table; a hub directory's defaults) and takes
// the flags on top, as dsv3c train does.
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
#include "runtime/train/Recipe.h"
#include "runtime/train/Checkpoint.h"
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
  std::string configJson;
  std::string recipeJson; ///< train-step: the training recipe
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
  info.mode = extra["mode"].get<std::string>();
  info.configJson = extra["config_json"].get<std::string>();
  if (info.mode == "train-step") {
    if (!extra.contains("train") || !extra["train"].is_object())
      return fileError(dir + "/manifest.json", "a train-step artifact without its training recipe");
    info.recipeJson = extra["train"].dump();
  }
  // The model entry point reads token ids [batch, seq] (and segment ids).
  for (const EntryPoint &e : exe.entries()) {
    if (e.name == "adamw_step")
      continue;
    if (e.inputs.empty() || e.inputs.size() > 2 || e.inputs[0].type != ElementType::I64 ||
        e.inputs[0].shape.size() != 2 ||
        (e.inputs.size() == 2 && e.inputs[1].shape != e.inputs[0].shape))
      return fileError(dir + "/manifest.json",
                       "entry point '" + e.name + "' does not read token ids [batch, seq]");
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

/// Whether `data` fits the token inputs of `entry`.
Error checkShape(const DataSource &data, const EntryPoint &entry, const std::string &dir) {
  const std::vector<int64_t> &shape = entry.inputs[0].shape;
  bool packed = entry.inputs.size() == 2;
  if (data.batch() != shape[0] || data.seqLen() != shape[1])
    return Error::failure(data.describe() + ": batch is " + std::to_string(data.batch()) + "x" +
                          std::to_string(data.seqLen()) + " but " + dir + " was compiled for " +
                          std::to_string(shape[0]) + "x" + std::to_string(shape[1]));
  if ((data.segments() != nullptr) != packed)
    return Error::failure(data.describe() + (packed ? ": has no segment_ids but "
                                                    : ": has segment_ids but ") +
                          dir + (packed ? " was compiled for packed rows"
                                        : " was compiled for single sequences"));
  return Error::success();
}

Error loadWeights(const std::string &weights, Session &session) {
  auto store = WeightStore::open(weights);
  if (!store)
    return store.takeError();
  return loadParameters(**store, session.layout(), session.parameters());
}

struct Options {
  std::string dir, command, weights, tokens, corpus, output;
  unsigned threads = 0;
  TrainOverrides train;
  std::string logJsonPath, plotPath, savePath, resumePath;
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
  if (Error e = checkShape(**data, *entry, o.dir))
    return fail(e);
  auto session = Session::create(exe);
  if (!session)
    return fail(session.error());
  if (Error e = loadWeights(o.weights, **session))
    return fail(e);
  std::vector<int64_t> ids;
  (*data)->fill(0, 0, 0, ids);
  std::vector<int64_t> shape{(*data)->batch(), (*data)->seqLen()};
  std::vector<BufferArg> inputs{{ids.data(), shape}};
  if (const std::vector<int64_t> *segments = (*data)->segments())
    inputs.push_back({const_cast<int64_t *>(segments->data()), shape});
  if (Error e = (*session)->run(entryName, inputs))
    return fail(e);
  std::string summary;
  if (Error e = writeOutputs(*entry, (*session)->outputs(entryName), o.output,
                             "dsv3-run " + o.command, summary))
    return fail(e);
  std::fputs(summary.c_str(), stdout);
  return 0;
}

int runTrain(const Options &o, const SharedObjectExecutable &exe, const ArtifactInfo &info) {
  const EntryPoint *entry = exe.entry("forward_grad");
  if (info.mode != "train-step" || !entry || !exe.entry("adamw_step"))
    return fail(o.dir + ": a " + info.mode +
                " artifact cannot train (compile it with --mode=train-step)");
  TrainConfig c;
  if (Error e = readRecipeJson(info.recipeJson, c, o.dir + "/manifest.json"))
    return fail(e);
  if (Error e = applyOverrides(c, o.train))
    return fail(e);
  c.configJson = info.configJson;
  c.logJsonPath = o.logJsonPath;
  c.savePath = o.savePath;
  c.resumePath = o.resumePath;
  c.plotPath = !o.plotPath.empty() ? o.plotPath
               : !o.savePath.empty() ? o.savePath + ".loss.svg"
                                     : std::string();
  std::unique_ptr<DataSource> data;
  const std::vector<int64_t> &shape = entry->inputs[0].shape;
  if (!o.tokens.empty()) {
    auto fixed = openFixedBatch(o.tokens, vocabularySize(info));
    if (!fixed)
      return fail(fixed.error());
    data = std::move(*fixed);
  } else if (!o.corpus.empty()) {
    auto corpus = openByteCorpus(o.corpus, vocabularySize(info), shape[0], shape[1]);
    if (!corpus)
      return fail(corpus.error());
    data = std::move(*corpus);
  } else {
    return fail("train needs --tokens T.safetensors or --corpus FILE");
  }
  if (Error e = checkShape(*data, *entry, o.dir))
    return fail(e);
  if (Error e = checkSaveTarget(c.savePath))
    return fail(e);
  auto session = Session::create(exe, &exe);
  if (!session)
    return fail(session.error());
  if (Error e = loadWeights(o.weights, **session))
    return fail(e);
  if (Error e = train(c, **session, *data))
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
  TrainOverrides &t = o.train;
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
  app.add_option("--betas", t.betas, "AdamW betas: b1,b2");
  app.add_option("--eps", t.eps, "AdamW epsilon");
  app.add_option("--weight-decay", t.weightDecay, "Decoupled weight decay");
  app.add_option("--grad-clip", t.gradClip, "Global gradient-norm clip (0 disables)");
  app.add_option("--warmup-steps", t.warmupSteps, "Linear warm-up steps");
  app.add_option("--decay-start", t.decayStart, "Cosine decay from this step (-1: constant)");
  app.add_option("--min-lr-ratio", t.minLrRatio, "Final learning rate / peak");
  app.add_option("--bias-update", t.biasUpdateSpeed, "Routing-bias update speed gamma");
  app.add_option("--grad-accum", t.gradAccumulation, "Micro-batches per step");
  app.add_option("--seed", t.seed, "Data sampling seed");
  app.add_option("--log-json", o.logJsonPath, "JSON-lines metrics");
  app.add_option("--plot", o.plotPath, "Loss curve SVG");
  app.add_option("--save", o.savePath, "Write a checkpoint DIR at the end");
  app.add_option("--resume", o.resumePath, "Continue from a checkpoint DIR");
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
