//===- Recipe.h - training settings: recorded, overridden, checked -*- C++ -*-===//
//
// Part of the runtime core (no LLVM). A training run's settings start from a
// recipe (a .toml description's [train] table, resolved by the compiler
// library and recorded in train-step artifacts) and take the command line's
// values on top. Both runners, dsv3c and dsv3-run, go through
// applyOverrides, so they accept and reject the same values.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_TRAIN_RECIPE_H
#define DSV3_RUNTIME_TRAIN_RECIPE_H

#include "runtime/train/Trainer.h"

#include <optional>
#include <string>

namespace dsv3::rt {

/// The training settings a command line gave; unset ones keep the recipe's.
struct TrainOverrides {
  std::optional<int64_t> steps, gradAccumulation, warmupSteps, decayStart;
  std::optional<uint64_t> seed;
  std::optional<double> lr, eps, weightDecay, gradClip, minLrRatio, biasUpdateSpeed;
  std::optional<std::string> betas; ///< "b1,b2"
};

/// Applies `overrides` to `config`, then checks every setting; the error
/// names the offending option and value.
Error applyOverrides(TrainConfig &config, const TrainOverrides &overrides);

/// The recipe part of `config` (the optimizer, schedule and balancing
/// settings; no paths) as a JSON object.
std::string recipeJson(const TrainConfig &config);

/// Reads recipeJson's object into `config`; errors name `source`.
Error readRecipeJson(const std::string &text, TrainConfig &config, const std::string &source);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_TRAIN_RECIPE_H
