//===- ModelDescriptionTest.cpp - model directories and .toml descriptions ===//
//
// Loads the bundled tiny model both ways, checks that an inline architecture
// means the same as its config.json, and that typos and conflicts are errors.
//
//===----------------------------------------------------------------------===//
#include "frontends/model/ModelDescription.h"
#include "runtime/io/Safetensors.h"
#include "tests/unit/model/TestSupport.h"

#include "llvm/Support/FormatVariadic.h"

#include <sstream>

using namespace dsv3;
using namespace dsv3::test;

namespace {

/// Every field (doubles exactly), for comparing two configs.
std::string dump(const ModelConfig &c) {
  std::ostringstream os;
  os.precision(17);
  os << c.vocabSize << ' ' << c.hiddenSize << ' ' << c.intermediateSize << ' '
     << c.moeIntermediateSize << ' ' << c.numHiddenLayers << ' '
     << c.firstKDenseReplace << ' ' << c.numAttentionHeads << ' ' << c.qLoraRank
     << ' ' << c.kvLoraRank << ' ' << c.qkNopeHeadDim << ' ' << c.qkRopeHeadDim
     << ' ' << c.vHeadDim << ' ' << c.nRoutedExperts << ' ' << c.nSharedExperts
     << ' ' << c.numExpertsPerTok << ' ' << c.nGroup << ' ' << c.topkGroup
     << ' ' << c.maxPositionEmbeddings << ' ' << c.numNextnPredictLayers << ' '
     << c.moeLayerFreq << ' ' << c.routedScalingFactor << ' ' << c.rmsNormEps
     << ' ' << c.ropeTheta << ' ' << c.initializerRange << ' ' << c.normTopkProb << c.tieWordEmbeddings
     << c.ropeInterleave << c.hasRoutingBias;
  const RopeScaling &r = c.rope;
  os << " rope " << r.yarn << ' ' << r.factor << ' '
     << r.originalMaxPositionEmbeddings << ' ' << r.betaFast << ' '
     << r.betaSlow << ' ' << r.mscale << ' ' << r.mscaleAllDim;
  if (c.quantization)
    os << " fp8 " << c.quantization->fmt << ' '
       << c.quantization->weightBlockRows << 'x'
       << c.quantization->weightBlockCols << ' '
       << c.quantization->activationScheme;
  return os.str();
}

/// The tiny config.json as a [model.architecture] table (JSON scalars and
/// arrays are valid TOML values).
std::string tinyArchitectureToml() {
  llvm::json::Value root = readSourceJson("models/tiny/config.json");
  std::string scalars = "[model.architecture]\n", tables;
  if (!root.getAsObject())
    return scalars;
  for (const auto *kv : llvm::json::sortedElements(*root.getAsObject())) {
    if (const llvm::json::Object *sub = kv->second.getAsObject()) {
      tables += llvm::formatv("[model.architecture.{0}]\n",
                              llvm::StringRef(kv->first))
                    .str();
      for (const auto *inner : llvm::json::sortedElements(*sub))
        tables += llvm::formatv("{0} = {1}\n", llvm::StringRef(inner->first),
                                inner->second)
                      .str();
    } else {
      scalars +=
          llvm::formatv("{0} = {1}\n", llvm::StringRef(kv->first), kv->second)
              .str();
    }
  }
  return scalars + tables;
}

/// Writes a description next to a weights file and loads it.
struct Fixture {
  TempDir tmp;
  Fixture() { tmp.write("w.safetensors", ""); }
  std::string write(llvm::StringRef text) { return tmp.write("m.toml", text); }
  std::string load(llvm::StringRef text) {
    return errorText(loadModelDescription(write(text)));
  }
};

const char *kHeader =
    "[model]\nconfig = \"config.json\"\nweights = \"w.safetensors\"\n";

TEST(ModelDescription, TinyTomlLoads) {
  std::string path = sourcePath("models/tiny/tiny.toml");
  llvm::Expected<ModelDescription> d = loadModelDescription(path);
  ASSERT_TRUE(bool(d)) << llvm::toString(d.takeError());
  EXPECT_EQ(d->path, path);
  EXPECT_EQ(d->weightsPath, sourcePath("models/tiny/model.safetensors"));
  EXPECT_FALSE(d->initSeed.has_value());
  EXPECT_EQ(d->config.sourcePath, sourcePath("models/tiny/config.json"));
  EXPECT_EQ(d->config.hiddenSize, 256);
  EXPECT_EQ(d->train.steps, 100);
  EXPECT_EQ(d->train.batchSize, 2);
  EXPECT_EQ(d->train.seqLen, 32);
  EXPECT_EQ(d->train.seed, 0);
  EXPECT_EQ(d->train.lr, 1e-3);
  EXPECT_EQ(d->train.warmupSteps, 10);
  EXPECT_EQ(d->train.weightDecay, 0.1);
  EXPECT_EQ(d->train.betas[0], 0.9);
  EXPECT_EQ(d->train.betas[1], 0.95);
  EXPECT_EQ(d->train.mtpWeight, 0.3);
  EXPECT_FALSE(d->fp8.enabled);
  EXPECT_EQ(d->fp8.weightBlock, 128);
  auto store = rt::WeightStore::open(d->weightsPath);
  ASSERT_TRUE(bool(store)) << store.error().message();
  EXPECT_EQ((*store)->names().size(), 205u);
}

TEST(ModelDescription, DirectoryLoads) {
  std::string dir = sourcePath("models/tiny");
  llvm::Expected<ModelDescription> d = loadModelDescription(dir);
  ASSERT_TRUE(bool(d)) << llvm::toString(d.takeError());
  EXPECT_EQ(d->weightsPath, dir);
  EXPECT_EQ(d->config.numExpertsPerTok, 4);
  EXPECT_EQ(d->train.steps, 0); // defaults
  EXPECT_EQ(d->train.betas[1], 0.95);

  TempDir empty;
  EXPECT_EQ(errorText(loadModelDescription(empty.root)),
            empty.root + ": model directory has no config.json");
}

TEST(ModelDescription, InlineArchitectureEqualsConfigJson) {
  Fixture f;
  std::string toml = "[init]\nseed = 7\n" + tinyArchitectureToml();
  llvm::Expected<ModelDescription> d = loadModelDescription(f.write(toml));
  ASSERT_TRUE(bool(d)) << llvm::toString(d.takeError()) << "\n" << toml;
  llvm::Expected<ModelConfig> hub =
      parseHubConfigFile(sourcePath("models/tiny/config.json"));
  ASSERT_TRUE(bool(hub));
  EXPECT_EQ(dump(d->config), dump(*hub));
  EXPECT_EQ(d->config.sourcePath, f.tmp.path("m.toml"));
  EXPECT_EQ(d->initSeed, std::optional<uint64_t>(7));
  EXPECT_EQ(d->weightsPath, "");
}

TEST(ModelDescription, ReadsEverySetting) {
  Fixture f;
  ASSERT_FALSE(llvm::sys::fs::copy_file(sourcePath("models/tiny/config.json"),
                                        f.tmp.path("config.json")));
  llvm::Expected<ModelDescription> d =
      loadModelDescription(f.write(std::string(kHeader) + R"(
[train]
steps = 5
batch_size = 3
seq_len = 256
seed = 11
lr = 2e-4
warmup_steps = 1
weight_decay = 0.0
betas = [0.8, 0.9]
eps = 1e-6
grad_clip = 0
mtp_weight = 0.1
balance_alpha = 0.001
bias_update_speed = 0
[fp8]
enabled = true
format = "e4m3"
activation_tile = 64
weight_block = 32
promotion_interval = 256
)"));
  ASSERT_TRUE(bool(d)) << llvm::toString(d.takeError());
  const TrainSettings &t = d->train;
  EXPECT_EQ(d->weightsPath, f.tmp.path("w.safetensors"));
  EXPECT_EQ(t.steps, 5);
  EXPECT_EQ(t.batchSize, 3);
  EXPECT_EQ(t.seqLen, 256);
  EXPECT_EQ(t.seed, 11);
  EXPECT_EQ(t.lr, 2e-4);
  EXPECT_EQ(t.warmupSteps, 1);
  EXPECT_EQ(t.weightDecay, 0.0);
  EXPECT_EQ(t.betas[0], 0.8);
  EXPECT_EQ(t.betas[1], 0.9);
  EXPECT_EQ(t.eps, 1e-6);
  EXPECT_EQ(t.gradClip, 0.0);
  EXPECT_EQ(t.mtpWeight, 0.1);
  EXPECT_EQ(t.balanceAlpha, 0.001);
  EXPECT_EQ(t.biasUpdateSpeed, 0.0);
  EXPECT_TRUE(d->fp8.enabled);
  EXPECT_EQ(d->fp8.format, "e4m3");
  EXPECT_EQ(d->fp8.activationTile, 64);
  EXPECT_EQ(d->fp8.weightBlock, 32);
  EXPECT_EQ(d->fp8.promotionInterval, 256);
}

TEST(ModelDescription, RejectsMistakes) {
  Fixture f;
  ASSERT_FALSE(llvm::sys::fs::copy_file(sourcePath("models/tiny/config.json"),
                                        f.tmp.path("config.json")));
  std::string path = f.tmp.path("m.toml");
  std::string arch = "[init]\nseed = 1\n[model.architecture]\nvocab_size = "
                     "512\nhidden_size = \"abc\"\n";
  const std::pair<std::string, std::string> cases[] = {
      {std::string(kHeader) + "[train]\nstepz = 3\n",
       "key 'train.stepz' is unknown (known keys: "},
      {std::string(kHeader) + "[trian]\nsteps = 3\n", "key 'trian' is unknown"},
      {"[model]\nconfig = \"config.json\"\nweight = \"w.safetensors\"\n",
       "key 'model.weight' is unknown"},
      {std::string(kHeader) + "[init]\nseed = 1\nsed = 2\n",
       "key 'init.sed' is unknown"},
      {std::string(kHeader) + "[fp8]\nenable = true\n",
       "key 'fp8.enable' is unknown"},
      {std::string(kHeader) + "[model.architecture]\nhidden_size = 256\n",
       "give exactly one of 'model.config' and [model.architecture]"},
      {"[model]\nweights = \"w.safetensors\"\n",
       "give exactly one of 'model.config' and [model.architecture]"},
      {"[model]\nconfig = \"config.json\"\n",
       "give exactly one of 'model.weights' and an [init]"},
      {std::string(kHeader) + "[init]\nseed = 1\n",
       "give exactly one of 'model.weights'"},
      {"[model]\nconfig = \"config.json\"\n[init]\n",
       "key 'init.seed' is missing"},
      {"[train]\nsteps = 1\n", "key 'model' is missing"},
      {"model = 3\n", "key 'model' must be a table/object, got 3"},
      {std::string(kHeader) + "[train]\nsteps = \"ten\"\n",
       "key 'train.steps' must be a non-negative integer, got \"ten\""},
      {std::string(kHeader) + "[train]\nsteps = 1.5\n",
       "key 'train.steps' must be a non-negative"},
      {std::string(kHeader) + "[train]\nlr = -1.0\n",
       "key 'train.lr' must be a non-negative number, got -1"},
      {std::string(kHeader) + "[train]\nbetas = [0.9]\n",
       "key 'train.betas' must be an array of 2 elements, each a number in [0, "
       "1), got [0.9]"},
      {std::string(kHeader) + "[train]\nbetas = [0.9, 1.0]\n",
       "key 'train.betas'"},
      {std::string(kHeader) + "[train]\neps = 0.0\n",
       "key 'train.eps' must be a positive number"},
      {std::string(kHeader) + "[train]\nseq_len = 512\n",
       "key 'train.seq_len' (512) exceeds the model's max_position_embeddings "
       "(256)"},
      {std::string(kHeader) + "[fp8]\nenabled = 1\n",
       "key 'fp8.enabled' must be true or false"},
      {std::string(kHeader) + "[fp8]\nformat = \"e3m4\"\n",
       "key 'fp8.format' = \"e3m4\" is not supported"},
      {std::string(kHeader) + "[fp8]\nweight_block = 0\n",
       "key 'fp8.weight_block' must be a positive"},
      {std::string(kHeader) + "[train]\nstart = 1979-05-27\n",
       "key 'train.start' holds a date"},
      {"[model]\nconfig = \"config.json\"\nweights = \"nope.safetensors\"\n",
       "key 'model.weights' names " + f.tmp.path("nope.safetensors") +
           ", which does not exist"},
      {arch, "key 'hidden_size' must be a positive integer"},
      {std::string(kHeader) + "[parallel]\nexpert = 3\n",
       "expert parallelism 3 does not divide the model's 16 routed experts"},
      {std::string(kHeader) + "[parallel]\npipeline = 9\n",
       "pipeline parallelism 9 exceeds the model's 3 layers"},
      {std::string(kHeader) + "[parallel]\ndata = 3\nranks_per_node = 2\n",
       "3 ranks do not fill nodes of 2 ranks"},
      {std::string(kHeader) + "[parallel]\nexpert = 2\nmax_nodes_per_token = 1\n",
       "node-limited routing (max_nodes_per_token) needs ranks_per_node"},
      {std::string(kHeader) + "[parallel]\ndata = 0\n", "key 'parallel.data'"},
      {std::string(kHeader) + "[parallel]\nexperts = 2\n", "key 'parallel.experts' is unknown"},
  };
  for (const auto &[text, expected] : cases) {
    std::string message = f.load(text);
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(expected), std::string::npos)
        << "expected '" << expected << "' in: " << message << "\nfor:\n"
        << text;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }

  // The config named by the description reports its own path.
  std::string badConfig = f.tmp.write("bad.json", "{");
  EXPECT_EQ(
      f.load("[model]\nconfig = \"bad.json\"\nweights = \"w.safetensors\"\n")
          .rfind(badConfig + ": invalid JSON", 0),
      0u);
}

TEST(ModelDescription, ReadsTheParallelPlan) {
  Fixture f;
  ASSERT_FALSE(llvm::sys::fs::copy_file(sourcePath("models/tiny/config.json"),
                                        f.tmp.path("config.json")));
  auto d = loadModelDescription(
      f.write(std::string(kHeader) + "[parallel]\ndata = 2\nexpert = 4\nranks_per_node = 4\n"
                                     "max_nodes_per_token = 1\n"));
  ASSERT_TRUE(static_cast<bool>(d)) << llvm::toString(d.takeError());
  EXPECT_EQ(d->parallel.data, 2);
  EXPECT_EQ(d->parallel.expert, 4);
  EXPECT_EQ(d->parallel.pipeline, 1);
  EXPECT_EQ(d->parallel.ranks(), 8);
  EXPECT_EQ(d->parallel.ranksPerNode, 4);
  EXPECT_EQ(d->parallel.maxNodesPerToken, 1);
  // Without [parallel]: one rank.
  auto plain = loadModelDescription(f.write(kHeader));
  ASSERT_TRUE(static_cast<bool>(plain)) << llvm::toString(plain.takeError());
  EXPECT_EQ(plain->parallel.ranks(), 1);
}

TEST(ModelDescription, TomlSyntaxErrorNamesLine) {
  Fixture f;
  std::string path = f.write("[model]\nconfig = \"config.json\"\nweights = \n");
  std::string message = errorText(loadModelDescription(path));
  EXPECT_EQ(message.rfind(path + ":3:", 0), 0u) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(ModelDescription, RejectsOtherPaths) {
  TempDir tmp;
  std::string json = tmp.write("model.json", "{}");
  EXPECT_EQ(errorText(loadModelDescription(json)),
            json + ": expected a model directory (with config.json) or a .toml "
                   "description");
  std::string missing = tmp.path("missing.toml");
  EXPECT_EQ(errorText(loadModelDescription(missing))
                .rfind(missing + ": cannot open", 0),
            0u);
}

} // namespace
