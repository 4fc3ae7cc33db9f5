//===- ModelConfig.cpp - hub config.json -> ModelConfig -------------------===//
//
// Parses and validates DeepSeek-V3-family config.json files, and computes the
// RoPE/YaRN quantities exactly as Hugging Face transformers does, in double.
//
//===----------------------------------------------------------------------===//
#include "frontends/model/ModelConfig.h"
#include "frontends/support/RuntimeError.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

using namespace llvm;

namespace dsv3 {
namespace {

constexpr int64_t kMaxDim = int64_t(1) << 31;
constexpr double kMaxParameters = double(int64_t(1) << 40);
constexpr uint64_t kMaxConfigBytes = uint64_t(64) << 20;

struct IntField {
  const char *key;
  int64_t ModelConfig::*member;
  int64_t min;
  bool required;
};
const IntField kIntFields[] = {
    {"vocab_size", &ModelConfig::vocabSize, 1, true},
    {"hidden_size", &ModelConfig::hiddenSize, 1, true},
    {"intermediate_size", &ModelConfig::intermediateSize, 1, true},
    // Required (and positive) only with routed experts, see below.
    {"moe_intermediate_size", &ModelConfig::moeIntermediateSize, 0, false},
    {"num_hidden_layers", &ModelConfig::numHiddenLayers, 1, true},
    {"first_k_dense_replace", &ModelConfig::firstKDenseReplace, 0, false},
    {"num_attention_heads", &ModelConfig::numAttentionHeads, 1, true},
    {"q_lora_rank", &ModelConfig::qLoraRank, 0, false},
    {"kv_lora_rank", &ModelConfig::kvLoraRank, 1, true},
    {"qk_nope_head_dim", &ModelConfig::qkNopeHeadDim, 1, true},
    {"qk_rope_head_dim", &ModelConfig::qkRopeHeadDim, 1, true},
    {"v_head_dim", &ModelConfig::vHeadDim, 1, true},
    {"n_routed_experts", &ModelConfig::nRoutedExperts, 0, false},
    {"n_shared_experts", &ModelConfig::nSharedExperts, 0, false},
    {"num_experts_per_tok", &ModelConfig::numExpertsPerTok, 0, false},
    {"n_group", &ModelConfig::nGroup, 1, false},
    {"topk_group", &ModelConfig::topkGroup, 1, false},
    {"max_position_embeddings", &ModelConfig::maxPositionEmbeddings, 1, false},
    {"num_nextn_predict_layers", &ModelConfig::numNextnPredictLayers, 0, false},
    {"moe_layer_freq", &ModelConfig::moeLayerFreq, 1, false},
};

struct RealField {
  const char *key;
  double ModelConfig::*member;
  NumberRange range;
};
const RealField kRealFields[] = {
    {"routed_scaling_factor", &ModelConfig::routedScalingFactor,
     NumberRange::Positive},
    {"rms_norm_eps", &ModelConfig::rmsNormEps, NumberRange::Positive},
    {"rope_theta", &ModelConfig::ropeTheta, NumberRange::AboveOne},
    {"initializer_range", &ModelConfig::initializerRange, NumberRange::Positive},
};

struct BoolField {
  const char *key;
  bool ModelConfig::*member;
};
const BoolField kBoolFields[] = {
    {"norm_topk_prob", &ModelConfig::normTopkProb},
    {"tie_word_embeddings", &ModelConfig::tieWordEmbeddings},
    {"rope_interleave", &ModelConfig::ropeInterleave},
};

/// Shortest text that reads back as the same double.
std::string showNumber(double v) {
  char buf[32];
  auto result = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, result.ptr);
}

/// A value as written in the input, for messages (cut to one short line).
std::string show(const json::Value &v) {
  std::string s;
  if (const json::Array *array = v.getAsArray()) {
    s = "[";
    for (const json::Value &element : *array)
      s += (s.size() > 1 ? ", " : "") + show(element);
    s += "]";
  } else if (v.kind() == json::Value::Number && !v.getAsInteger()) {
    s = showNumber(*v.getAsNumber());
  } else {
    s = formatv("{0}", v).str();
  }
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

std::string integerRule(int64_t min, int64_t max) {
  std::string rule = min == 0   ? "a non-negative integer"
                     : min == 1 ? "a positive integer"
                                : "an integer >= " + std::to_string(min);
  if (max != std::numeric_limits<int64_t>::max())
    rule += " no larger than " + std::to_string(max);
  return rule;
}

bool inRange(double v, NumberRange range) {
  if (!std::isfinite(v))
    return false;
  switch (range) {
  case NumberRange::Any:
    return true;
  case NumberRange::Positive:
    return v > 0;
  case NumberRange::NonNegative:
    return v >= 0;
  case NumberRange::UnitInterval:
    return v >= 0 && v < 1;
  case NumberRange::AtLeastOne:
    return v >= 1;
  case NumberRange::AboveOne:
    return v > 1;
  }
  return false;
}

const char *numberRule(NumberRange range) {
  switch (range) {
  case NumberRange::Any:
    return "a finite number";
  case NumberRange::Positive:
    return "a positive number";
  case NumberRange::NonNegative:
    return "a non-negative number";
  case NumberRange::UnitInterval:
    return "a number in [0, 1)";
  case NumberRange::AtLeastOne:
    return "a number >= 1";
  case NumberRange::AboveOne:
    return "a number > 1";
  }
  return "a number";
}

std::optional<int64_t> asInteger(const json::Value &v, int64_t min,
                                 int64_t max) {
  std::optional<int64_t> i = v.getAsInteger();
  if (i && *i >= min && *i <= max)
    return i;
  return std::nullopt;
}

std::optional<double> asNumber(const json::Value &v, NumberRange range) {
  std::optional<double> d = v.getAsNumber();
  if (d && inRange(*d, range))
    return d;
  return std::nullopt;
}

/// Hugging Face's yarn get_mscale.
double yarnMscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

/// Parameter count from the tensor shapes of the hub checkpoint layout, in
/// double so that absurd sizes cannot overflow.
double estimateParameters(const ModelConfig &c) {
  double h = c.hiddenSize, heads = c.numAttentionHeads;
  double qLora = c.qLoraRank, kvLora = c.kvLoraRank;
  double query = c.qLoraRank > 0
                     ? h * qLora + qLora + qLora * heads * c.qkHeadDim()
                     : h * heads * c.qkHeadDim();
  double attention = query + h * (kvLora + c.qkRopeHeadDim) + kvLora +
                     kvLora * heads * (c.qkNopeHeadDim + c.vHeadDim) +
                     heads * c.vHeadDim * h + 2 * h;
  double dense = 3 * h * c.intermediateSize;
  double experts = double(c.nRoutedExperts) + double(c.nSharedExperts);
  double moe = 3 * h * c.moeIntermediateSize * experts +
               double(c.nRoutedExperts) * (h + 1);
  int64_t layers = c.numHiddenLayers + c.numNextnPredictLayers;
  int64_t moeLayers = 0;
  if (c.nRoutedExperts > 0) {
    // Multiples of moeLayerFreq in [firstKDenseReplace, numHiddenLayers),
    // plus the MTP layers.
    int64_t first =
        (c.firstKDenseReplace + c.moeLayerFreq - 1) / c.moeLayerFreq;
    int64_t last = (c.numHiddenLayers - 1) / c.moeLayerFreq;
    moeLayers =
        std::max<int64_t>(0, last - first + 1) + c.numNextnPredictLayers;
  }
  double mtpProjections = double(c.numNextnPredictLayers) * (2 * h * h + 3 * h);
  return double(c.vocabSize) * h * (c.tieWordEmbeddings ? 1 : 2) + h +
         double(layers) * attention + double(moeLayers) * moe +
         double(layers - moeLayers) * dense + mtpProjections;
}

/// rope_scaling, or the newer rope_parameters (which also carries rope_theta).
void parseRope(FieldReader &r, ModelConfig &c) {
  bool newer = r.has("rope_parameters");
  StringRef key = newer ? "rope_parameters" : "rope_scaling";
  const json::Object *obj = r.object(key);
  if (!obj)
    return;
  FieldReader rr = r.nested(key, *obj);
  const StringRef kinds[] = {"yarn", "default"};
  std::optional<std::string> type = rr.string("rope_type", kinds);
  std::optional<std::string> legacyType = rr.string("type", kinds);
  if (type && legacyType && *type != *legacyType)
    rr.fail("type", "= \"" + *legacyType + "\" disagrees with rope_type \"" +
                        *type + "\"");
  if (!type)
    type = legacyType;
  if (!type && !rr.has("rope_type") && !rr.has("type"))
    rr.fail("type", "is missing");
  if (newer) {
    double topLevel = c.ropeTheta;
    rr.number("rope_theta", c.ropeTheta, NumberRange::AboveOne);
    if (r.has("rope_theta") && c.ropeTheta != topLevel)
      rr.fail("rope_theta",
              "= " + showNumber(c.ropeTheta) +
                  " disagrees with rope_theta = " + showNumber(topLevel));
  }
  if (type != "yarn")
    return;

  RopeScaling &s = c.rope;
  s.yarn = true;
  s.originalMaxPositionEmbeddings = c.maxPositionEmbeddings;
  bool originalGiven = rr.has("original_max_position_embeddings");
  rr.integer("original_max_position_embeddings",
             s.originalMaxPositionEmbeddings, 1, kMaxDim);
  // Like newer transformers: an absent factor is max / original positions.
  if (rr.has("factor"))
    rr.number("factor", s.factor, NumberRange::AtLeastOne);
  else if (originalGiven)
    s.factor = double(c.maxPositionEmbeddings) /
               double(s.originalMaxPositionEmbeddings);
  else
    rr.fail("factor", "is missing");
  rr.number("beta_fast", s.betaFast, NumberRange::Positive);
  rr.number("beta_slow", s.betaSlow, NumberRange::Positive);
  rr.number("mscale", s.mscale, NumberRange::Any);
  rr.number("mscale_all_dim", s.mscaleAllDim, NumberRange::Any);
  if (rr.has("attention_factor"))
    rr.fail("attention_factor",
            "is not supported (it follows from mscale and mscale_all_dim)");
  bool truncate = true;
  rr.boolean("truncate", truncate);
  if (!truncate)
    rr.fail("truncate", "= false is not supported");
}

void parseQuantization(FieldReader &r, ModelConfig &c) {
  const json::Object *obj = r.object("quantization_config");
  if (!obj)
    return;
  FieldReader qr = r.nested("quantization_config", *obj);
  FP8QuantizationConfig q;
  qr.string("quant_method", {"fp8"}, /*required=*/true);
  if (std::optional<std::string> fmt = qr.string("fmt", {"e4m3"}))
    q.fmt = *fmt;
  if (std::optional<std::string> scheme =
          qr.string("activation_scheme", {"dynamic"}))
    q.activationScheme = *scheme;
  int64_t block[2] = {q.weightBlockRows, q.weightBlockCols};
  qr.integers("weight_block_size", block, 1, kMaxDim);
  q.weightBlockRows = block[0];
  q.weightBlockCols = block[1];
  c.quantization = q;
}

} // namespace

//===----------------------------------------------------------------------===//
// FieldReader
//===----------------------------------------------------------------------===//

FieldReader::FieldReader(const json::Object &obj, StringRef file)
    : obj(&obj), file(file.str()), problem(std::make_shared<std::string>()) {}

FieldReader FieldReader::nested(StringRef key,
                                const json::Object &nestedObj) const {
  FieldReader r(nestedObj, file);
  r.prefix = keyName(key) + ".";
  r.problem = problem;
  return r;
}

const json::Value *FieldReader::lookup(StringRef key, bool required) {
  asked.insert(key);
  const json::Value *v = obj->get(key);
  if (v && v->kind() != json::Value::Null)
    return v;
  if (required)
    fail(key, v ? "must not be null" : "is missing");
  return nullptr;
}

bool FieldReader::has(StringRef key) { return lookup(key, false) != nullptr; }

void FieldReader::integer(StringRef key, int64_t &out, int64_t min, int64_t max,
                          bool required) {
  if (const json::Value *v = lookup(key, required)) {
    if (std::optional<int64_t> i = asInteger(*v, min, max))
      out = *i;
    else
      fail(key, "must be " + integerRule(min, max) + ", got " + show(*v));
  }
}

void FieldReader::number(StringRef key, double &out, NumberRange range,
                         bool required) {
  if (const json::Value *v = lookup(key, required)) {
    if (std::optional<double> d = asNumber(*v, range))
      out = *d;
    else
      fail(key, Twine("must be ") + numberRule(range) + ", got " + show(*v));
  }
}

void FieldReader::boolean(StringRef key, bool &out) {
  if (const json::Value *v = lookup(key, false)) {
    if (std::optional<bool> b = v->getAsBoolean())
      out = *b;
    else
      fail(key, "must be true or false, got " + show(*v));
  }
}

std::optional<std::string>
FieldReader::string(StringRef key, ArrayRef<StringRef> allowed, bool required) {
  const json::Value *v = lookup(key, required);
  if (!v)
    return std::nullopt;
  std::optional<StringRef> s = v->getAsString();
  if (!s) {
    fail(key, "must be a string, got " + show(*v));
    return std::nullopt;
  }
  if (!allowed.empty() && !is_contained(allowed, *s)) {
    fail(key, "= " + show(*v) + " is not supported (only " +
                  join(allowed, ", ") + ")");
    return std::nullopt;
  }
  return s->str();
}

template <typename T, typename Convert>
void FieldReader::readArray(StringRef key, MutableArrayRef<T> out,
                            Convert convert, const Twine &rule) {
  const json::Value *v = lookup(key, false);
  if (!v)
    return;
  const json::Array *array = v->getAsArray();
  std::vector<T> values;
  for (size_t i = 0; array && array->size() == out.size() && i < out.size();
       ++i)
    if (std::optional<T> e = convert((*array)[i]))
      values.push_back(*e);
  if (values.size() == out.size())
    llvm::copy(values, out.begin());
  else
    fail(key, formatv("must be an array of {0} elements, each {1}, got {2}",
                      out.size(), rule, show(*v)));
}

void FieldReader::integers(StringRef key, MutableArrayRef<int64_t> out,
                           int64_t min, int64_t max) {
  readArray(
      key, out, [&](const json::Value &e) { return asInteger(e, min, max); },
      integerRule(min, max));
}

void FieldReader::numbers(StringRef key, MutableArrayRef<double> out,
                          NumberRange range) {
  readArray(
      key, out, [&](const json::Value &e) { return asNumber(e, range); },
      numberRule(range));
}

const json::Object *FieldReader::object(StringRef key, bool required) {
  const json::Value *v = lookup(key, required);
  if (!v)
    return nullptr;
  const json::Object *o = v->getAsObject();
  if (!o)
    fail(key, "must be a table/object, got " + show(*v));
  return o;
}

void FieldReader::fail(StringRef key, const Twine &message) {
  if (problem->empty())
    *problem = ("key '" + keyName(key) + "' " + message).str();
}

void FieldReader::rejectUnknownKeys() {
  std::vector<std::string> unknown, known;
  for (const auto &kv : *obj)
    if (!asked.contains(kv.first))
      unknown.push_back(kv.first.str());
  if (unknown.empty())
    return;
  for (StringRef key : asked.keys())
    known.push_back(key.str());
  llvm::sort(unknown);
  llvm::sort(known);
  fail(unknown.front(), "is unknown (known keys: " + join(known, ", ") + ")");
}

Error FieldReader::takeError() {
  if (problem->empty())
    return Error::success();
  return makeFileError(file, std::exchange(*problem, std::string()));
}

//===----------------------------------------------------------------------===//
// ModelConfig
//===----------------------------------------------------------------------===//

bool ModelConfig::isMoELayer(int64_t layer) const {
  if (nRoutedExperts <= 0)
    return false;
  if (layer >= numHiddenLayers)
    return true;
  return layer >= firstKDenseReplace && layer % moeLayerFreq == 0;
}

double ModelConfig::softmaxScale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qkHeadDim()));
  if (rope.yarn && rope.mscaleAllDim != 0) {
    double m = yarnMscale(rope.factor, rope.mscaleAllDim);
    scale *= m * m;
  }
  return scale;
}

std::vector<double> ModelConfig::ropeInverseFrequencies() const {
  int64_t dim = qkRopeHeadDim;
  double base = ropeTheta;
  // YaRN keeps frequency i <= low, divides i >= high by the factor, and blends
  // linearly in between.
  double low = 0, high = 0;
  if (rope.yarn) {
    auto correctionDim = [&](double rotations) {
      return dim *
             std::log(rope.originalMaxPositionEmbeddings /
                      (rotations * 2 * numbers::pi)) /
             (2 * std::log(base));
    };
    low = std::max(std::floor(correctionDim(rope.betaFast)), 0.0);
    high = std::min(std::ceil(correctionDim(rope.betaSlow)),
                    static_cast<double>(dim - 1));
    if (low == high)
      high += 0.001;
  }
  std::vector<double> inv(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) {
    double posFreq = std::pow(base, static_cast<double>(2 * i) / dim);
    double extrapolation = 1.0 / posFreq;
    if (!rope.yarn) {
      inv[i] = extrapolation;
      continue;
    }
    double interpolation = 1.0 / (rope.factor * posFreq);
    double keep = 1.0 - std::clamp((i - low) / (high - low), 0.0, 1.0);
    inv[i] = interpolation * (1.0 - keep) + extrapolation * keep;
  }
  return inv;
}

double ModelConfig::ropeAttentionFactor() const {
  if (!rope.yarn)
    return 1.0;
  if (rope.mscale != 0 && rope.mscaleAllDim != 0)
    return yarnMscale(rope.factor, rope.mscale) /
           yarnMscale(rope.factor, rope.mscaleAllDim);
  return yarnMscale(rope.factor, 1.0);
}

Error validate(const ModelConfig &c) {
  auto fail = [&](const Twine &problem) {
    return makeFileError(c.sourcePath, problem);
  };
  for (const IntField &f : kIntFields) {
    int64_t v = c.*f.member;
    if (v < f.min || v > kMaxDim)
      return fail(formatv("key '{0}' must be {1}, got {2}", f.key,
                          integerRule(f.min, kMaxDim), v));
  }
  struct NamedNumber {
    const char *key;
    double value;
    NumberRange range;
  };
  std::vector<NamedNumber> reals;
  for (const RealField &f : kRealFields)
    reals.push_back({f.key, c.*f.member, f.range});
  if (c.rope.yarn)
    reals.insert(
        reals.end(),
        {{"rope_scaling.factor", c.rope.factor, NumberRange::AtLeastOne},
         {"rope_scaling.beta_fast", c.rope.betaFast, NumberRange::Positive},
         {"rope_scaling.beta_slow", c.rope.betaSlow, NumberRange::Positive},
         {"rope_scaling.mscale", c.rope.mscale, NumberRange::Any},
         {"rope_scaling.mscale_all_dim", c.rope.mscaleAllDim,
          NumberRange::Any}});
  for (const NamedNumber &n : reals)
    if (!inRange(n.value, n.range))
      return fail(formatv("key '{0}' must be {1}, got {2}", n.key,
                          numberRule(n.range), showNumber(n.value)));

  if (c.qkRopeHeadDim % 2 != 0)
    return fail(formatv(
        "key 'qk_rope_head_dim' must be even (RoPE rotates pairs), got {0}",
        c.qkRopeHeadDim));
  if (c.nRoutedExperts > 0) {
    if (c.moeIntermediateSize < 1 || c.numExpertsPerTok < 1)
      return fail("keys 'moe_intermediate_size' and 'num_experts_per_tok' "
                  "must be positive when n_routed_experts > 0");
    if (c.nRoutedExperts % c.nGroup != 0)
      return fail(
          formatv("key 'n_group' ({0}) must divide n_routed_experts ({1})",
                  c.nGroup, c.nRoutedExperts));
    if (c.topkGroup > c.nGroup)
      return fail(
          formatv("key 'topk_group' ({0}) must not exceed n_group ({1})",
                  c.topkGroup, c.nGroup));
    int64_t reachable = c.topkGroup * (c.nRoutedExperts / c.nGroup);
    if (c.numExpertsPerTok > reachable)
      return fail(formatv("key 'num_experts_per_tok' ({0}) exceeds the {1} "
                          "experts of topk_group ({2}) groups",
                          c.numExpertsPerTok, reachable, c.topkGroup));
  }
  if (c.rope.yarn) {
    if (c.rope.originalMaxPositionEmbeddings < 1 ||
        c.rope.originalMaxPositionEmbeddings > kMaxDim)
      return fail(formatv("key 'rope_scaling.original_max_position_embeddings' "
                          "must be {0}, got {1}",
                          integerRule(1, kMaxDim),
                          c.rope.originalMaxPositionEmbeddings));
    if (c.rope.betaFast < c.rope.betaSlow)
      return fail(formatv("key 'rope_scaling.beta_fast' ({0}) must not be "
                          "below beta_slow ({1})",
                          showNumber(c.rope.betaFast),
                          showNumber(c.rope.betaSlow)));
  }
  if (c.quantization) {
    for (int64_t block :
         {c.quantization->weightBlockRows, c.quantization->weightBlockCols})
      if (block < 1 || block > kMaxDim)
        return fail(formatv("key 'quantization_config.weight_block_size' must "
                            "hold {0}s, got {1}",
                            integerRule(1, kMaxDim), block));
  }
  double parameters = estimateParameters(c);
  if (parameters > kMaxParameters)
    return fail("the architecture has about " + showNumber(parameters) +
                " parameters, more than the limit of 2^40");
  return Error::success();
}

Expected<ModelConfig> parseHubConfigObject(const json::Object &obj,
                                           StringRef path) {
  ModelConfig c;
  c.sourcePath = path.str();
  c.maxPositionEmbeddings = 4096;
  FieldReader r(obj, path);
  std::optional<std::string> modelType = r.string("model_type");
  if (modelType && !StringRef(*modelType).starts_with("deepseek") &&
      *modelType != "kimi_k2")
    r.fail("model_type", "= \"" + *modelType +
                             "\" is not a DeepSeek-V3-family model "
                             "(deepseek_v3, deepseek_v2, kimi_k2)");
  for (const IntField &f : kIntFields)
    r.integer(f.key, c.*f.member, f.min, kMaxDim, f.required);
  for (const RealField &f : kRealFields)
    r.number(f.key, c.*f.member, f.range);
  for (const BoolField &f : kBoolFields)
    r.boolean(f.key, c.*f.member);
  if (c.nRoutedExperts > 0)
    for (StringRef key : {"moe_intermediate_size", "num_experts_per_tok"})
      if (!r.has(key))
        r.fail(key, "is required when n_routed_experts > 0");

  r.string("scoring_func", {"sigmoid"});
  r.string("topk_method", {"noaux_tc"});
  r.string("hidden_act", {"silu"});
  bool attentionBias = false;
  r.boolean("attention_bias", attentionBias);
  if (attentionBias)
    r.fail("attention_bias",
           "= true is not supported (DeepSeek-V3 attention has no biases)");
  int64_t kvHeads = c.numAttentionHeads;
  r.integer("num_key_value_heads", kvHeads, 1, kMaxDim);
  if (kvHeads != c.numAttentionHeads)
    r.fail("num_key_value_heads",
           formatv("= {0} must equal num_attention_heads ({1}) for MLA",
                   kvHeads, c.numAttentionHeads));
  parseRope(r, c);
  parseQuantization(r, c);
  if (Error err = r.takeError())
    return std::move(err);
  if (Error err = validate(c))
    return std::move(err);
  return c;
}

Expected<ModelConfig> parseHubConfigText(StringRef text, StringRef path) {
  Expected<json::Value> root = json::parse(text);
  if (!root)
    return makeFileError(path, "invalid JSON: " + toString(root.takeError()));
  const json::Object *obj = root->getAsObject();
  if (!obj)
    return makeFileError(path, "expected a JSON object at the top level");
  return parseHubConfigObject(*obj, path);
}

Expected<ModelConfig> parseHubConfigFile(StringRef path) {
  Expected<rt::MappedFile> buffer = readInputFile(path, kMaxConfigBytes);
  if (!buffer)
    return buffer.takeError();
  return parseHubConfigText(buffer->text(), path);
}

} // namespace dsv3

namespace dsv3 {

std::string toHubConfigJSON(const ModelConfig &c) {
  llvm::json::Object o{{"architectures", llvm::json::Array{"DeepseekV3ForCausalLM"}},
                       {"model_type", "deepseek_v3"},
                       {"scoring_func", "sigmoid"},
                       {"topk_method", "noaux_tc"},
                       {"hidden_act", "silu"},
                       {"attention_bias", false},
                       {"num_key_value_heads", c.numAttentionHeads},
                       {"initializer_range", c.initializerRange}};
  for (const IntField &f : kIntFields)
    o[f.key] = c.*f.member;
  if (c.qLoraRank == 0)
    o["q_lora_rank"] = nullptr;
  for (const RealField &f : kRealFields)
    o[f.key] = c.*f.member;
  for (const BoolField &f : kBoolFields)
    o[f.key] = c.*f.member;
  if (c.rope.yarn)
    o["rope_scaling"] = llvm::json::Object{
        {"type", "yarn"},
        {"factor", c.rope.factor},
        {"original_max_position_embeddings", c.rope.originalMaxPositionEmbeddings},
        {"beta_fast", c.rope.betaFast},
        {"beta_slow", c.rope.betaSlow},
        {"mscale", c.rope.mscale},
        {"mscale_all_dim", c.rope.mscaleAllDim}};
  else
    o["rope_scaling"] = nullptr;
  if (c.quantization)
    o["quantization_config"] = llvm::json::Object{
        {"quant_method", "fp8"},
        {"fmt", c.quantization->fmt},
        {"activation_scheme", c.quantization->activationScheme},
        {"weight_block_size", llvm::json::Array{c.quantization->weightBlockRows,
                                                c.quantization->weightBlockCols}}};
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(o))) << "\n";
  return text;
}

} // namespace dsv3
