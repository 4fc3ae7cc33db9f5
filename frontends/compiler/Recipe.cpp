//===- Recipe.cpp - a run's settings from the description and the flags ---===//
#include "frontends/compiler/Recipe.h"

#include "frontends/model/ModelConfig.h"

namespace dsv3 {

std::optional<std::string> fp8PassOptions(const ModelDescription &desc,
                                          const CompileOverrides &overrides) {
  if (!overrides.fp8 && !desc.fp8.enabled)
    return std::nullopt;
  const FP8Settings &f = desc.fp8;
  std::string o = "format=" + f.format + " activation-tile=" + std::to_string(f.activationTile) +
                  " weight-block=" + std::to_string(f.weightBlock) +
                  " promotion-interval=" + std::to_string(f.promotionInterval) +
                  " cache-activations=" + f.cacheActivations;
  if (f.powerOfTwoScales)
    o += " power-of-two-scales=true";
  return o + " " + overrides.fp8Options;
}

llvm::Expected<CompileOptions> resolveCompileOptions(const ModelDescription &desc,
                                                     const CompileOverrides &overrides,
                                                     CompileMode mode, int64_t batch,
                                                     int64_t seqLen, bool packed) {
  CompileOptions o;
  o.mode = mode;
  o.batch = batch;
  o.seqLen = seqLen;
  o.packed = packed;
  const TrainSettings &recipe = desc.train;
  o.mtpWeight = overrides.mtpWeight.value_or(desc.hasRecipe ? recipe.mtpWeight : 0.3);
  o.balanceAlpha = overrides.balanceAlpha.value_or(desc.hasRecipe ? recipe.balanceAlpha : 0.0);
  if (o.balanceAlpha < 0)
    return llvm::createStringError("--balance-alpha must not be negative");
  o.fp8 = fp8PassOptions(desc, overrides);
  o.bf16Moments = overrides.bf16Moments.value_or(o.fp8.has_value());
  return o;
}

rt::TrainConfig recipeTrainConfig(const ModelDescription &desc) {
  rt::TrainConfig c;
  c.configJson = toHubConfigJSON(desc.config);
  if (!desc.hasRecipe) {
    c.gradClip = 0;
    return c;
  }
  const TrainSettings &t = desc.train;
  // [train] leaves steps and lr at 0 when it does not name them.
  if (t.steps > 0)
    c.steps = t.steps;
  if (t.lr > 0)
    c.lr = t.lr;
  c.seed = t.seed;
  c.warmupSteps = t.warmupSteps;
  c.eps = t.eps;
  c.weightDecay = t.weightDecay;
  c.gradClip = t.gradClip;
  c.beta1 = t.betas[0];
  c.beta2 = t.betas[1];
  c.biasUpdateSpeed = t.biasUpdateSpeed;
  return c;
}

std::pair<int64_t, int64_t> recipeBatchShape(const ModelDescription &desc,
                                             std::optional<int64_t> batch,
                                             std::optional<int64_t> seqLen) {
  const TrainSettings &t = desc.train;
  return {batch.value_or(desc.hasRecipe && t.batchSize > 0 ? t.batchSize : 1),
          seqLen.value_or(desc.hasRecipe && t.seqLen > 0 ? t.seqLen : 32)};
}

} // namespace dsv3
