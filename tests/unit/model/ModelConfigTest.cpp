//===- ModelConfigTest.cpp - hub config.json parsing and RoPE/YaRN math ---===//
//
// Checks every field of the bundled tiny config, the YaRN frequencies against
// an independent computation and the DeepSeek-V3 reference values, and one
// error per class of bad input.
//
//===----------------------------------------------------------------------===//
#include "frontends/model/ModelConfig.h"
#include "tests/unit/model/TestSupport.h"

#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace dsv3;
using namespace dsv3::test;

namespace {

constexpr double kPi = 3.14159265358979323846;

/// One change to the tiny config: set `key` to the JSON text, or remove it
/// when json is null.
struct Edit {
  const char *key;
  const char *json;
};

llvm::Expected<ModelConfig> parseEdited(std::initializer_list<Edit> edits) {
  llvm::json::Value root = readSourceJson("models/tiny/config.json");
  if (!root.getAsObject())
    return llvm::createStringError("models/tiny/config.json is not available");
  llvm::json::Object &obj = *root.getAsObject();
  for (const Edit &e : edits) {
    if (e.json)
      obj[e.key] = llvm::cantFail(llvm::json::parse(e.json));
    else
      obj.erase(e.key);
  }
  return parseHubConfigObject(obj, "edited/config.json");
}

ModelConfig parseEditedOk(std::initializer_list<Edit> edits) {
  llvm::Expected<ModelConfig> c = parseEdited(edits);
  if (!c) {
    ADD_FAILURE() << llvm::toString(c.takeError());
    return ModelConfig();
  }
  return *c;
}

/// DeepSeek-V3 671B RoPE settings (SPEC appendix B).
ModelConfig deepSeekV3Rope() {
  ModelConfig c;
  c.qkNopeHeadDim = 128;
  c.qkRopeHeadDim = 64;
  c.ropeTheta = 10000;
  c.rope.yarn = true;
  c.rope.factor = 40;
  c.rope.originalMaxPositionEmbeddings = 4096;
  c.rope.betaFast = 32;
  c.rope.betaSlow = 1;
  c.rope.mscale = 1;
  c.rope.mscaleAllDim = 1;
  return c;
}

TEST(ModelConfig, TinyConfigEveryField) {
  std::string path = sourcePath("models/tiny/config.json");
  llvm::Expected<ModelConfig> parsed = parseHubConfigFile(path);
  ASSERT_TRUE(bool(parsed)) << llvm::toString(parsed.takeError());
  const ModelConfig &c = *parsed;
  EXPECT_EQ(c.sourcePath, path);
  EXPECT_EQ(c.vocabSize, 512);
  EXPECT_EQ(c.hiddenSize, 256);
  EXPECT_EQ(c.intermediateSize, 512);
  EXPECT_EQ(c.moeIntermediateSize, 32);
  EXPECT_EQ(c.numHiddenLayers, 3);
  EXPECT_EQ(c.firstKDenseReplace, 1);
  EXPECT_EQ(c.numAttentionHeads, 4);
  EXPECT_EQ(c.qLoraRank, 128);
  EXPECT_EQ(c.kvLoraRank, 64);
  EXPECT_EQ(c.qkNopeHeadDim, 32);
  EXPECT_EQ(c.qkRopeHeadDim, 16);
  EXPECT_EQ(c.vHeadDim, 32);
  EXPECT_EQ(c.qkHeadDim(), 48);
  EXPECT_EQ(c.nRoutedExperts, 16);
  EXPECT_EQ(c.nSharedExperts, 1);
  EXPECT_EQ(c.numExpertsPerTok, 4);
  EXPECT_EQ(c.nGroup, 4);
  EXPECT_EQ(c.topkGroup, 2);
  EXPECT_EQ(c.maxPositionEmbeddings, 256);
  EXPECT_EQ(c.numNextnPredictLayers, 1);
  EXPECT_EQ(c.moeLayerFreq, 1);
  EXPECT_EQ(c.routedScalingFactor, 2.5);
  EXPECT_EQ(c.rmsNormEps, 1e-6);
  EXPECT_EQ(c.ropeTheta, 10000.0);
  EXPECT_TRUE(c.normTopkProb);
  EXPECT_FALSE(c.tieWordEmbeddings);
  EXPECT_TRUE(c.ropeInterleave);
  EXPECT_TRUE(c.hasRoutingBias);
  EXPECT_TRUE(c.rope.yarn);
  EXPECT_EQ(c.rope.factor, 4.0);
  EXPECT_EQ(c.rope.originalMaxPositionEmbeddings, 64);
  EXPECT_EQ(c.rope.betaFast, 32.0);
  EXPECT_EQ(c.rope.betaSlow, 1.0);
  EXPECT_EQ(c.rope.mscale, 1.0);
  EXPECT_EQ(c.rope.mscaleAllDim, 1.0);
  EXPECT_FALSE(c.quantization.has_value());

  EXPECT_FALSE(c.isMoELayer(0));
  EXPECT_TRUE(c.isMoELayer(1));
  EXPECT_TRUE(c.isMoELayer(2));
  EXPECT_TRUE(c.isMoELayer(3)); // the MTP block

  double m = 0.1 * std::log(4.0) + 1;
  EXPECT_NEAR(c.softmaxScale(), std::pow(48.0, -0.5) * m * m, 1e-12);
  EXPECT_DOUBLE_EQ(c.ropeAttentionFactor(), 1.0); // mscale == mscale_all_dim
}

TEST(ModelConfig, TinyYarnFrequenciesMatchIndependentFormula) {
  ModelConfig c = parseEditedOk({});
  std::vector<double> inv = c.ropeInverseFrequencies();
  ASSERT_EQ(inv.size(), 8u);
  // d = 16, base 1e4, L0 = 64: the correction dims are -0.99 (beta 32) and
  // 2.02 (beta 1), so the ramp runs from index 0 to 3.
  auto correctionDim = [](double rotations) {
    return 16 * std::log(64 / (2 * kPi * rotations)) / (2 * std::log(1e4));
  };
  double low = std::max(0.0, std::floor(correctionDim(32)));
  double high = std::min(15.0, std::ceil(correctionDim(1)));
  ASSERT_EQ(low, 0.0);
  ASSERT_EQ(high, 3.0);
  for (int i = 0; i < 8; ++i) {
    double base = std::pow(1e4, -2.0 * i / 16);
    double t = std::clamp((i - low) / (high - low), 0.0, 1.0);
    double expected = base * (1 - t) + base / 4 * t;
    EXPECT_NEAR(inv[i], expected, 1e-12 * expected) << "i = " << i;
  }
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_DOUBLE_EQ(inv[5], std::pow(1e4, -10.0 / 16) / 4);
}

TEST(ModelConfig, DeepSeekV3YarnMatchesReferenceTable) {
  ModelConfig c = deepSeekV3Rope();
  std::vector<double> inv = c.ropeInverseFrequencies();
  ASSERT_EQ(inv.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    double base = std::pow(1e4, -2.0 * i / 64);
    if (i <= 10)
      EXPECT_NEAR(inv[i], base, 1e-14 * base) << "i = " << i;
    if (i >= 23)
      EXPECT_NEAR(inv[i], base / 40, 1e-14 * base) << "i = " << i;
  }
  const std::pair<int, double> table[] = {
      {11, 3.900693e-2}, {12, 2.687936e-2}, {14, 1.244796e-2}, {16, 5.5e-3},
      {18, 2.249365e-3}, {20, 7.905695e-4}, {22, 1.778279e-4}};
  for (auto [i, expected] : table)
    EXPECT_NEAR(inv[i], expected, 1e-6 * expected) << "i = " << i;
  EXPECT_NEAR(c.softmaxScale(), 0.135233779, 1e-9);
  EXPECT_DOUBLE_EQ(c.ropeAttentionFactor(), 1.0);
}

TEST(ModelConfig, AttentionFactorWhenMscalesDiffer) {
  ModelConfig c = deepSeekV3Rope();
  c.rope.mscale = 0.707;
  c.rope.mscaleAllDim = 1.0;
  double l = std::log(40.0);
  EXPECT_NEAR(c.ropeAttentionFactor(), (0.0707 * l + 1) / (0.1 * l + 1), 1e-12);
  c.rope.mscaleAllDim = 0; // absent: only mscale's own correction
  EXPECT_NEAR(c.ropeAttentionFactor(), 0.1 * l + 1, 1e-12);
  EXPECT_NEAR(c.softmaxScale(), std::pow(192.0, -0.5), 1e-15);
}

TEST(ModelConfig, Variants) {
  EXPECT_EQ(parseEditedOk({{"q_lora_rank", "null"}}).qLoraRank, 0);
  EXPECT_EQ(parseEditedOk({{"q_lora_rank", nullptr}}).qLoraRank, 0);
  EXPECT_FALSE(parseEditedOk({{"norm_topk_prob", "false"}}).normTopkProb);
  EXPECT_TRUE(parseEditedOk({{"norm_topk_prob", nullptr}}).normTopkProb);
  EXPECT_EQ(parseEditedOk({{"n_shared_experts", "0"}}).nSharedExperts, 0);
  EXPECT_EQ(parseEditedOk({{"n_shared_experts", "null"}}).nSharedExperts, 0);
  EXPECT_EQ(
      parseEditedOk({{"num_nextn_predict_layers", "0"}}).numNextnPredictLayers,
      0);
  ModelConfig mtp2 = parseEditedOk({{"num_nextn_predict_layers", "2"}});
  EXPECT_EQ(mtp2.numNextnPredictLayers, 2);
  EXPECT_TRUE(mtp2.isMoELayer(4));

  ModelConfig noRope = parseEditedOk({{"rope_scaling", "null"}});
  EXPECT_FALSE(noRope.rope.yarn);
  EXPECT_DOUBLE_EQ(noRope.softmaxScale(), std::pow(48.0, -0.5));
  EXPECT_DOUBLE_EQ(noRope.ropeAttentionFactor(), 1.0);
  std::vector<double> plain = noRope.ropeInverseFrequencies();
  for (int i = 0; i < 8; ++i)
    EXPECT_DOUBLE_EQ(plain[i], std::pow(1e4, -2.0 * i / 16));
  EXPECT_FALSE(
      parseEditedOk({{"rope_scaling", R"({"type": "default"})"}}).rope.yarn);

  ModelConfig newer =
      parseEditedOk({{"rope_scaling", nullptr},
                     {"rope_theta", nullptr},
                     {"rope_parameters",
                      R"({"rope_type": "yarn", "rope_theta": 50000,
                          "factor": 8, "original_max_position_embeddings": 32,
                          "mscale_all_dim": 0.5})"}});
  EXPECT_TRUE(newer.rope.yarn);
  EXPECT_EQ(newer.ropeTheta, 50000.0);
  EXPECT_EQ(newer.rope.factor, 8.0);
  EXPECT_EQ(newer.rope.originalMaxPositionEmbeddings, 32);
  EXPECT_EQ(newer.rope.mscaleAllDim, 0.5);
  // factor absent: max_position_embeddings / original (256 / 64).
  EXPECT_EQ(parseEditedOk({{"rope_scaling", R"({"type": "yarn",
                              "original_max_position_embeddings": 64})"}})
                .rope.factor,
            4.0);

  ModelConfig dense = parseEditedOk({{"n_routed_experts", nullptr},
                                     {"moe_intermediate_size", nullptr},
                                     {"num_experts_per_tok", nullptr}});
  EXPECT_EQ(dense.nRoutedExperts, 0);
  EXPECT_FALSE(dense.isMoELayer(1));
  EXPECT_FALSE(dense.isMoELayer(3));

  ModelConfig everyOther = parseEditedOk({{"moe_layer_freq", "2"}});
  EXPECT_FALSE(everyOther.isMoELayer(1));
  EXPECT_TRUE(everyOther.isMoELayer(2));

  ModelConfig fp8 = parseEditedOk(
      {{"quantization_config", R"({"quant_method": "fp8", "fmt": "e4m3",
          "activation_scheme": "dynamic", "weight_block_size": [64, 32]})"}});
  ASSERT_TRUE(fp8.quantization.has_value());
  EXPECT_EQ(fp8.quantization->weightBlockRows, 64);
  EXPECT_EQ(fp8.quantization->weightBlockCols, 32);
  EXPECT_EQ(fp8.quantization->fmt, "e4m3");
  EXPECT_EQ(fp8.quantization->activationScheme, "dynamic");
  ModelConfig fp8Default =
      parseEditedOk({{"quantization_config", R"({"quant_method": "fp8"})"}});
  ASSERT_TRUE(fp8Default.quantization.has_value());
  EXPECT_EQ(fp8Default.quantization->weightBlockRows, 128);
}

struct BadEdit {
  std::initializer_list<Edit> edits;
  const char *expected; // substring of the message
};

TEST(ModelConfig, RejectsBadValuesWithOneLineNamingTheKey) {
  const BadEdit cases[] = {
      {{{"hidden_size", R"("abc")"}},
       "key 'hidden_size' must be a positive integer no larger than "
       "2147483648, got \"abc\""},
      {{{"hidden_size", "2.5"}},
       "key 'hidden_size' must be a positive integer"},
      {{{"hidden_size", "-4"}}, "key 'hidden_size' must be a positive integer"},
      {{{"hidden_size", "1e12"}},
       "key 'hidden_size' must be a positive integer no larger than"},
      {{{"hidden_size", "1e300"}}, "key 'hidden_size'"},
      {{{"num_attention_heads", "0"}},
       "key 'num_attention_heads' must be a positive integer"},
      {{{"vocab_size", "2147483648"}, {"hidden_size", "1048576"}},
       "more than the limit of 2^40"},
      {{{"kv_lora_rank", nullptr}}, "key 'kv_lora_rank' is missing"},
      {{{"v_head_dim", "null"}}, "key 'v_head_dim' must not be null"},
      {{{"moe_intermediate_size", nullptr}},
       "'moe_intermediate_size' is required when"},
      {{{"scoring_func", R"("softmax")"}},
       "key 'scoring_func' = \"softmax\" is not supported (only sigmoid)"},
      {{{"topk_method", R"("greedy")"}},
       "key 'topk_method' = \"greedy\" is not supported"},
      {{{"hidden_act", R"("gelu")"}}, "key 'hidden_act'"},
      {{{"attention_bias", "true"}}, "key 'attention_bias'"},
      {{{"num_key_value_heads", "1"}},
       "key 'num_key_value_heads' = 1 must equal"},
      {{{"model_type", R"("llama")"}},
       "key 'model_type' = \"llama\" is not a DeepSeek"},
      {{{"norm_topk_prob", R"("yes")"}},
       "key 'norm_topk_prob' must be true or false"},
      {{{"rms_norm_eps", "0"}},
       "key 'rms_norm_eps' must be a positive number, got 0"},
      {{{"rope_theta", R"("big")"}}, "key 'rope_theta' must be a number > 1"},
      {{{"qk_rope_head_dim", "15"}}, "key 'qk_rope_head_dim' must be even"},
      {{{"n_group", "3"}},
       "key 'n_group' (3) must divide n_routed_experts (16)"},
      {{{"topk_group", "5"}},
       "key 'topk_group' (5) must not exceed n_group (4)"},
      {{{"num_experts_per_tok", "9"}},
       "key 'num_experts_per_tok' (9) exceeds the 8 experts"},
      {{{"rope_scaling", R"({"type": "linear", "factor": 2})"}},
       "key 'rope_scaling.type' = \"linear\" is not supported (only yarn, "
       "default)"},
      {{{"rope_scaling", R"({"rope_type": "dynamic", "factor": 2})"}},
       "key 'rope_scaling.rope_type' = \"dynamic\""},
      {{{"rope_scaling", R"({"factor": 2})"}},
       "key 'rope_scaling.type' is missing"},
      {{{"rope_scaling", R"("yarn")"}},
       "key 'rope_scaling' must be a table/object"},
      {{{"rope_scaling", R"({"type": "yarn", "factor": 0.5})"}},
       "key 'rope_scaling.factor' must be a number >= 1, got 0.5"},
      {{{"rope_scaling", R"({"type": "yarn"})"}},
       "key 'rope_scaling.factor' is missing"},
      {{{"rope_scaling",
         R"({"type": "yarn", "factor": 4, "beta_fast": 1, "beta_slow": 32})"}},
       "key 'rope_scaling.beta_fast' (1) must not be below beta_slow (32)"},
      {{{"rope_scaling",
         R"({"type": "yarn", "factor": 4, "attention_factor": 1})"}},
       "key 'rope_scaling.attention_factor' is not supported"},
      {{{"rope_parameters", R"({"rope_type": "default", "rope_theta": 5})"}},
       "key 'rope_parameters.rope_theta' = 5 disagrees with rope_theta = "
       "10000"},
      {{{"quantization_config", R"({"quant_method": "gptq"})"}},
       "key 'quantization_config.quant_method' = \"gptq\" is not supported "
       "(only fp8)"},
      {{{"quantization_config",
         R"({"quant_method": "fp8", "weight_block_size": [128]})"}},
       "key 'quantization_config.weight_block_size' must be an array of 2 "
       "elements"},
      {{{"quantization_config",
         R"({"quant_method": "fp8", "weight_block_size": [128, 0]})"}},
       "key 'quantization_config.weight_block_size' must be an array of 2 "
       "elements"},
      {{{"quantization_config", R"({"fmt": "e4m3"})"}},
       "key 'quantization_config.quant_method' is missing"},
  };
  for (const BadEdit &bad : cases) {
    std::string message = errorText(parseEdited(bad.edits));
    EXPECT_EQ(message.rfind("edited/config.json: ", 0), 0u) << message;
    EXPECT_NE(message.find(bad.expected), std::string::npos)
        << "expected '" << bad.expected << "' in: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(ModelConfig, RejectsBadTextAndFiles) {
  std::string invalid =
      errorText(parseHubConfigText("{\"vocab_size\": ", "bad.json"));
  EXPECT_EQ(invalid.rfind("bad.json: invalid JSON", 0), 0u) << invalid;

  std::string utf8 =
      errorText(parseHubConfigText("{\"model_type\": \"deep\xff\"}", "u.json"));
  EXPECT_EQ(utf8.rfind("u.json: invalid JSON", 0), 0u) << utf8;
  EXPECT_NE(utf8.find("UTF-8"), std::string::npos) << utf8;

  std::string array = errorText(parseHubConfigText("[1, 2]", "a.json"));
  EXPECT_EQ(array, "a.json: expected a JSON object at the top level");

  std::string missing =
      errorText(parseHubConfigFile("/nonexistent/dsv3/config.json"));
  EXPECT_EQ(missing.rfind("/nonexistent/dsv3/config.json: cannot open", 0), 0u)
      << missing;

  std::string dir = sourcePath("models/tiny");
  EXPECT_EQ(errorText(parseHubConfigFile(dir)),
            dir + ": is a directory, not a file");

  std::string device = errorText(parseHubConfigFile("/dev/zero"));
  EXPECT_EQ(device, "/dev/zero: is not a regular file");
}

TEST(ModelConfig, ValidateChecksProgrammaticConfigs) {
  ModelConfig empty;
  empty.sourcePath = "built";
  EXPECT_EQ(errorText(validate(empty)),
            "built: key 'vocab_size' must be a positive integer no larger than "
            "2147483648, got 0");
  ModelConfig tiny = parseEditedOk({});
  EXPECT_EQ(errorText(validate(tiny)), "");
  tiny.rope.betaSlow = 64;
  EXPECT_NE(errorText(validate(tiny)).find("'rope_scaling.beta_fast'"),
            std::string::npos);
}

} // namespace
