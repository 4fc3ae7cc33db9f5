//===- ModelConfig.h - DeepSeek-V3 architecture, hub keys -------*- C++ -*-===//
//
// ModelConfig holds the architecture of a DeepSeek-V3-family model as read
// from a Hugging Face config.json, plus the derived RoPE/YaRN quantities.
// FieldReader is the typed JSON key reader shared with ModelDescription.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_MODEL_MODELCONFIG_H
#define DSV3_FRONTENDS_MODEL_MODELCONFIG_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dsv3 {

struct RopeScaling {
  bool yarn = false; // rope_scaling.type/rope_type == "yarn"
  double factor = 1.0;
  int64_t originalMaxPositionEmbeddings = 0;
  double betaFast = 32.0, betaSlow = 1.0;
  double mscale = 1.0, mscaleAllDim = 0.0; // absent mscale_all_dim => 0
};

/// config.json "quantization_config" (quant_method fp8).
struct FP8QuantizationConfig {
  std::string fmt = "e4m3";
  int64_t weightBlockRows = 128, weightBlockCols = 128;
  std::string activationScheme = "dynamic";
};

struct ModelConfig {
  std::string sourcePath; // file it came from (for messages)
  int64_t vocabSize = 0, hiddenSize = 0, intermediateSize = 0,
          moeIntermediateSize = 0;
  int64_t numHiddenLayers = 0, firstKDenseReplace = 0, numAttentionHeads = 0;
  int64_t qLoraRank = 0; // 0 means null: no query compression (q_proj)
  int64_t kvLoraRank = 0, qkNopeHeadDim = 0, qkRopeHeadDim = 0, vHeadDim = 0;
  int64_t nRoutedExperts = 0, nSharedExperts = 0, numExpertsPerTok = 0;
  int64_t nGroup = 1, topkGroup = 1, maxPositionEmbeddings = 0,
          numNextnPredictLayers = 0;
  int64_t moeLayerFreq = 1;
  double routedScalingFactor = 1.0, rmsNormEps = 1e-6, ropeTheta = 10000.0;
  double initializerRange = 0.02; // std of random initialisation
  bool normTopkProb = true, tieWordEmbeddings = false, ropeInterleave = true;
  bool hasRoutingBias = true; // topk_method "noaux_tc" (the only one accepted)
  RopeScaling rope;
  std::optional<FP8QuantizationConfig> quantization;

  int64_t qkHeadDim() const { return qkNopeHeadDim + qkRopeHeadDim; }
  /// Layers from firstKDenseReplace on (every moeLayerFreq-th) are MoE; MTP
  /// layers (index >= numHiddenLayers) are MoE whenever there are experts.
  bool isMoELayer(int64_t layer) const;
  /// qkHeadDim^-0.5, times m^2 with m = 0.1*mscaleAllDim*ln(factor)+1 for YaRN
  /// with mscaleAllDim != 0 and factor > 1 (the Hugging Face rule).
  double softmaxScale() const;
  /// qkRopeHeadDim/2 inverse frequencies, YaRN-blended when rope.yarn (as
  /// Hugging Face's _compute_yarn_parameters with truncation), in double.
  std::vector<double> ropeInverseFrequencies() const;
  /// Multiplier of cos/sin: get_mscale(factor, mscale) /
  /// get_mscale(factor, mscaleAllDim) for YaRN with both non-zero,
  /// get_mscale(factor) for other YaRN settings, 1 without YaRN.
  double ropeAttentionFactor() const;
};

/// Parses a Hugging Face config.json of the DeepSeek-V3 family.
llvm::Expected<ModelConfig> parseHubConfigFile(llvm::StringRef path);
llvm::Expected<ModelConfig> parseHubConfigText(llvm::StringRef text,
                                               llvm::StringRef pathForMessages);
/// Builds from an already-parsed JSON object (the TOML description converts
/// inline architectures to JSON and comes here).
llvm::Expected<ModelConfig>
parseHubConfigObject(const llvm::json::Object &obj,
                     llvm::StringRef pathForMessages);
/// Range and cross-field checks; messages name the hub keys.
llvm::Error validate(const ModelConfig &c);
/// The hub config.json text of `c` (what checkpoints are written with).
std::string toHubConfigJSON(const ModelConfig &c);

/// Allowed values of a number read by FieldReader.
enum class NumberRange {
  Any,
  Positive,
  NonNegative,
  UnitInterval /*[0,1)*/,
  AtLeastOne,
  AboveOne
};

/// Reads typed keys of one JSON object. The first problem is kept as a
/// one-line `<file>: key '<prefix><key>' ...` message and later reads become
/// harmless. Absent and null keys leave the output untouched unless required.
class FieldReader {
public:
  FieldReader(const llvm::json::Object &obj, llvm::StringRef file);
  /// Reader of a nested object; its keys are named "<key>.<nested key>" and
  /// its problems land in this reader.
  FieldReader nested(llvm::StringRef key, const llvm::json::Object &obj) const;

  bool has(llvm::StringRef key); // present and not null
  void integer(llvm::StringRef key, int64_t &out, int64_t min,
               int64_t max = std::numeric_limits<int64_t>::max(),
               bool required = false);
  void number(llvm::StringRef key, double &out, NumberRange range,
              bool required = false);
  void boolean(llvm::StringRef key, bool &out);
  /// With `allowed` non-empty, any other value is reported as unsupported.
  std::optional<std::string>
  string(llvm::StringRef key, llvm::ArrayRef<llvm::StringRef> allowed = {},
         bool required = false);
  /// Exactly out.size() elements.
  void integers(llvm::StringRef key, llvm::MutableArrayRef<int64_t> out,
                int64_t min, int64_t max);
  void numbers(llvm::StringRef key, llvm::MutableArrayRef<double> out,
               NumberRange range);
  const llvm::json::Object *object(llvm::StringRef key, bool required = false);

  /// Records "key '<prefix><key>' <problem>".
  void fail(llvm::StringRef key, const llvm::Twine &problem);
  /// Reports the first key that no read asked about (catches typos).
  void rejectUnknownKeys();
  /// Success when nothing was recorded (by this reader or a nested one).
  llvm::Error takeError();

private:
  const llvm::json::Value *lookup(llvm::StringRef key, bool required);
  template <typename T, typename Convert>
  void readArray(llvm::StringRef key, llvm::MutableArrayRef<T> out,
                 Convert convert, const llvm::Twine &rule);
  std::string keyName(llvm::StringRef key) const { return prefix + key.str(); }

  const llvm::json::Object *obj;
  std::string file, prefix;
  std::shared_ptr<std::string> problem; // shared with nested readers
  llvm::StringSet<> asked;
};

} // namespace dsv3

#endif // DSV3_FRONTENDS_MODEL_MODELCONFIG_H
