//===- Recipe.h - a run's settings from the description and the flags -*- C++ -*-===//
//
// Where the command line meets the model description's recipe, for every
// program that compiles (dsv3c, tests, a launcher): flags win; a .toml
// description's [train] and [fp8] tables fill the rest; a bare hub
// directory gets the defaults (no gradient clipping there: Hugging Face's
// reference trajectories are unclipped). Train-step artifacts record the
// resolved training recipe, so that dsv3-run trains as dsv3c does.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_COMPILER_RECIPE_H
#define DSV3_FRONTENDS_COMPILER_RECIPE_H

#include "frontends/compiler/Compiler.h"
#include "runtime/train/Recipe.h"

#include <optional>
#include <string>

namespace dsv3 {

/// What the command line said about the compiled code; unset values come
/// from the description.
struct CompileOverrides {
  std::optional<double> mtpWeight, balanceAlpha;
  bool fp8 = false;          ///< --fp8 (FP8 is also on with [fp8] enabled)
  std::string fp8Options;    ///< extra dsv3-fp8-tile-quantize options
  std::optional<bool> bf16Moments; ///< default: BF16 exactly when FP8 is on
};

/// dsv3-fp8-tile-quantize options when FP8 is on, from [fp8] and the
/// extra options; nullopt when every GEMM stays float32.
std::optional<std::string> fp8PassOptions(const ModelDescription &desc,
                                          const CompileOverrides &overrides);

/// Compile options for `mode` and a batch shape: objective weights from the
/// flags, else the recipe (0 balance weight for a hub directory), FP8 and
/// moment storage as above. Fails on a negative weight.
llvm::Expected<CompileOptions> resolveCompileOptions(const ModelDescription &desc,
                                                     const CompileOverrides &overrides,
                                                     CompileMode mode, int64_t batch,
                                                     int64_t seqLen, bool packed);

/// The description's training recipe as runtime settings (with the hub
/// config.json that checkpoints carry); flags go on top with
/// rt::applyOverrides.
rt::TrainConfig recipeTrainConfig(const ModelDescription &desc);

/// The batch shape of training on a corpus: the flags', else the recipe's
/// batch_size and seq_len, else 1 x 32.
std::pair<int64_t, int64_t> recipeBatchShape(const ModelDescription &desc,
                                             std::optional<int64_t> batch,
                                             std::optional<int64_t> seqLen);

} // namespace dsv3

#endif // DSV3_FRONTENDS_COMPILER_RECIPE_H
