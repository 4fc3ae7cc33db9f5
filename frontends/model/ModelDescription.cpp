//===- ModelDescription.cpp - load a model directory or .toml description -===//
//
// TOML is converted to llvm::json so that the same FieldReader (and, for
// [model.architecture], the same hub-config validation) applies to both.
//
//===----------------------------------------------------------------------===//
#include "frontends/model/ModelDescription.h"
#include "frontends/support/RuntimeError.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <toml++/toml.h>

using namespace llvm;

namespace dsv3 {
namespace {

constexpr uint64_t kMaxDescriptionBytes = uint64_t(16) << 20;
constexpr int64_t kMaxSize = int64_t(1) << 31;
constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

Expected<json::Value> toJson(const toml::node &node, StringRef file,
                             const std::string &key) {
  if (const toml::table *table = node.as_table()) {
    json::Object obj;
    for (const auto &[k, v] : *table) {
      std::string name(k.str());
      Expected<json::Value> value =
          toJson(v, file, key.empty() ? name : key + "." + name);
      if (!value)
        return value.takeError();
      obj[name] = std::move(*value);
    }
    return json::Value(std::move(obj));
  }
  if (const toml::array *array = node.as_array()) {
    json::Array values;
    for (const toml::node &element : *array) {
      Expected<json::Value> value = toJson(element, file, key);
      if (!value)
        return value.takeError();
      values.push_back(std::move(*value));
    }
    return json::Value(std::move(values));
  }
  if (const auto *s = node.as_string())
    return json::Value(s->get());
  if (const auto *i = node.as_integer())
    return json::Value(i->get());
  if (const auto *f = node.as_floating_point())
    return json::Value(f->get());
  if (const auto *b = node.as_boolean())
    return json::Value(b->get());
  return makeFileError(
      file, "key '" + key + "' holds a date or time, which no setting takes");
}

Expected<toml::table> parseToml(StringRef path) {
  Expected<rt::MappedFile> buffer = readInputFile(path, kMaxDescriptionBytes);
  if (!buffer)
    return buffer.takeError();
  try {
    return toml::parse(buffer->text(),
                       std::string_view(path.data(), path.size()));
  } catch (const toml::parse_error &e) {
    return makeFileError(formatv("{0}:{1}:{2}", path, e.source().begin.line,
                                 e.source().begin.column)
                             .str(),
                         e.description());
  }
}

void readTrain(FieldReader r, TrainSettings &t) {
  r.integer("steps", t.steps, 0, kMaxInt);
  r.integer("batch_size", t.batchSize, 0, kMaxSize);
  r.integer("seq_len", t.seqLen, 0, kMaxSize);
  r.integer("seed", t.seed, 0, kMaxInt);
  r.integer("warmup_steps", t.warmupSteps, 0, kMaxInt);
  r.number("lr", t.lr, NumberRange::NonNegative);
  r.number("weight_decay", t.weightDecay, NumberRange::NonNegative);
  r.number("eps", t.eps, NumberRange::Positive);
  r.number("grad_clip", t.gradClip, NumberRange::NonNegative);
  r.numbers("betas", t.betas, NumberRange::UnitInterval);
  r.number("mtp_weight", t.mtpWeight, NumberRange::NonNegative);
  r.number("balance_alpha", t.balanceAlpha, NumberRange::NonNegative);
  r.number("bias_update_speed", t.biasUpdateSpeed, NumberRange::NonNegative);
  r.rejectUnknownKeys();
}

void readParallel(FieldReader r, ParallelSettings &p) {
  r.integer("data", p.data, 1, kMaxSize);
  r.integer("expert", p.expert, 1, kMaxSize);
  r.integer("pipeline", p.pipeline, 1, kMaxSize);
  r.integer("ranks_per_node", p.ranksPerNode, 0, kMaxSize);
  r.integer("max_nodes_per_token", p.maxNodesPerToken, 0, kMaxSize);
  r.rejectUnknownKeys();
}

void readFP8(FieldReader r, FP8Settings &f) {
  r.boolean("enabled", f.enabled);
  if (std::optional<std::string> format = r.string("format", {"e4m3", "e5m2"}))
    f.format = *format;
  r.boolean("power_of_two_scales", f.powerOfTwoScales);
  if (std::optional<std::string> cache =
          r.string("cache_activations", {"fp32", "fp8"}))
    f.cacheActivations = *cache;
  r.integer("activation_tile", f.activationTile, 1, kMaxSize);
  r.integer("weight_block", f.weightBlock, 1, kMaxSize);
  r.integer("promotion_interval", f.promotionInterval, 1, kMaxSize);
  r.rejectUnknownKeys();
}

Expected<ModelDescription> loadToml(StringRef path) {
  Expected<toml::table> table = parseToml(path);
  if (!table)
    return table.takeError();
  Expected<json::Value> root = toJson(*table, path, "");
  if (!root)
    return root.takeError();

  ModelDescription d;
  d.path = path.str();
  d.hasRecipe = true;
  FieldReader r(*root->getAsObject(), path);
  const json::Object *model = r.object("model", /*required=*/true);
  const json::Object *init = r.object("init");
  const json::Object *train = r.object("train");
  const json::Object *fp8 = r.object("fp8");
  const json::Object *parallel = r.object("parallel");
  r.rejectUnknownKeys();
  std::optional<std::string> configPath, weights;
  const json::Object *architecture = nullptr;
  if (model) {
    FieldReader mr = r.nested("model", *model);
    configPath = mr.string("config");
    weights = mr.string("weights");
    architecture = mr.object("architecture");
    mr.rejectUnknownKeys();
  }
  if (init) {
    FieldReader ir = r.nested("init", *init);
    int64_t seed = 0;
    ir.integer("seed", seed, 0, kMaxInt, /*required=*/true);
    ir.rejectUnknownKeys();
    d.initSeed = static_cast<uint64_t>(seed);
  }
  if (train)
    readTrain(r.nested("train", *train), d.train);
  if (fp8)
    readFP8(r.nested("fp8", *fp8), d.fp8);
  if (parallel)
    readParallel(r.nested("parallel", *parallel), d.parallel);
  if (Error err = r.takeError())
    return std::move(err);

  if (configPath.has_value() == (architecture != nullptr))
    return makeFileError(
        path, "give exactly one of 'model.config' and [model.architecture]");
  if (weights.has_value() == d.initSeed.has_value())
    return makeFileError(
        path, "give exactly one of 'model.weights' and an [init] seed");
  // Paths are relative to the description, not to the working directory.
  auto resolve = [&](StringRef p) {
    if (sys::path::is_absolute(p))
      return p.str();
    SmallString<256> full(sys::path::parent_path(path));
    sys::path::append(full, p);
    return std::string(full);
  };
  if (weights) {
    d.weightsPath = resolve(*weights);
    if (!sys::fs::exists(d.weightsPath))
      return makeFileError(path, "key 'model.weights' names " + d.weightsPath +
                                     ", which does not exist");
  }
  Expected<ModelConfig> config =
      configPath ? parseHubConfigFile(resolve(*configPath))
                 : parseHubConfigObject(*architecture, path);
  if (!config)
    return config.takeError();
  d.config = std::move(*config);
  if (d.train.seqLen > d.config.maxPositionEmbeddings)
    return makeFileError(
        path, formatv("key 'train.seq_len' ({0}) exceeds the model's "
                      "max_position_embeddings ({1})",
                      d.train.seqLen, d.config.maxPositionEmbeddings));
  if (Error e = checkParallelPlan(d.config, d.parallel, path))
    return std::move(e);
  return std::move(d);
}

Expected<ModelDescription> loadDirectory(StringRef dir) {
  SmallString<256> configPath(dir);
  sys::path::append(configPath, "config.json");
  if (!sys::fs::exists(configPath))
    return makeFileError(dir, "model directory has no config.json");
  Expected<ModelConfig> config = parseHubConfigFile(configPath);
  if (!config)
    return config.takeError();
  ModelDescription d;
  d.path = dir.str();
  d.config = std::move(*config);
  d.weightsPath = dir.str(); // WeightStore finds single or sharded files
  return std::move(d);
}

} // namespace

Error checkParallelPlan(const ModelConfig &c, const ParallelSettings &p, StringRef source) {
  if (p.expert > 1 && (c.nRoutedExperts == 0 || c.nRoutedExperts % p.expert != 0))
    return makeFileError(source, formatv("expert parallelism {0} does not divide the model's "
                                         "{1} routed experts",
                                         p.expert, c.nRoutedExperts));
  if (p.pipeline > c.numHiddenLayers)
    return makeFileError(source, formatv("pipeline parallelism {0} exceeds the model's {1} "
                                         "layers",
                                         p.pipeline, c.numHiddenLayers));
  if (p.ranksPerNode > 0 && p.ranks() % p.ranksPerNode != 0)
    return makeFileError(source, formatv("{0} ranks do not fill nodes of {1} ranks",
                                         p.ranks(), p.ranksPerNode));
  if (p.maxNodesPerToken > 0 && p.ranksPerNode == 0)
    return makeFileError(source, "node-limited routing (max_nodes_per_token) needs "
                                 "ranks_per_node");
  return Error::success();
}

Expected<ModelDescription> loadModelDescription(StringRef path) {
  sys::fs::file_status status;
  if (std::error_code ec = sys::fs::status(path, status))
    return makeFileError(path, "cannot open: " + ec.message());
  if (sys::fs::is_directory(status))
    return loadDirectory(path);
  if (!path.ends_with(".toml"))
    return makeFileError(
        path, "expected a model directory (with config.json) or a .toml "
              "description");
  return loadToml(path);
}

} // namespace dsv3
