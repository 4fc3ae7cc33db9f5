//===- Recipe.cpp - training settings: recorded, overridden, checked ------===//
#include "runtime/train/Recipe.h"

#include <nlohmann/json.hpp>

#include <cmath>

namespace dsv3::rt {

using nlohmann::json;

namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

/// Every setting in range, or the option that is not.
Error check(const TrainConfig &c) {
  auto bad = [](const std::string &option, const std::string &value, const char *why) {
    return Error::failure("--" + option + " " + why + ", got " + value);
  };
  if (c.steps <= 0)
    return bad("steps", std::to_string(c.steps), "must be positive");
  if (c.gradAccumulation <= 0)
    return bad("grad-accum", std::to_string(c.gradAccumulation), "must be positive");
  if (!(c.lr > 0) || !std::isfinite(c.lr))
    return bad("lr", number(c.lr), "must be positive");
  for (auto [option, v] : {std::pair<const char *, double>{"eps", c.eps},
                           {"weight-decay", c.weightDecay},
                           {"grad-clip", c.gradClip},
                           {"min-lr-ratio", c.minLrRatio},
                           {"bias-update", c.biasUpdateSpeed}})
    if (!(v >= 0) || !std::isfinite(v))
      return bad(option, number(v), "must be a finite number >= 0");
  if (!(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1))
    return bad("betas", number(c.beta1) + "," + number(c.beta2), "must lie in [0, 1)");
  if (c.warmupSteps < 0)
    return bad("warmup-steps", std::to_string(c.warmupSteps), "must not be negative");
  return Error::success();
}

} // namespace

Error applyOverrides(TrainConfig &c, const TrainOverrides &o) {
  auto take = [](auto &setting, const auto &given) {
    if (given)
      setting = *given;
  };
  take(c.steps, o.steps);
  take(c.gradAccumulation, o.gradAccumulation);
  take(c.warmupSteps, o.warmupSteps);
  take(c.seed, o.seed);
  take(c.lr, o.lr);
  take(c.eps, o.eps);
  take(c.weightDecay, o.weightDecay);
  take(c.gradClip, o.gradClip);
  take(c.minLrRatio, o.minLrRatio);
  take(c.biasUpdateSpeed, o.biasUpdateSpeed);
  // A negative decay start means "constant", as on the command line.
  if (o.decayStart)
    c.decayStart = *o.decayStart >= 0 ? std::optional<int64_t>(*o.decayStart) : std::nullopt;
  if (o.betas) {
    const std::string &text = *o.betas;
    size_t comma = text.find(',');
    size_t end1 = 0, end2 = 0;
    try {
      if (comma == std::string::npos)
        throw std::invalid_argument(text);
      c.beta1 = std::stod(text.substr(0, comma), &end1);
      c.beta2 = std::stod(text.substr(comma + 1), &end2);
    } catch (const std::exception &) {
      end1 = 0;
    }
    if (end1 == 0 || end1 != comma || end2 != text.size() - comma - 1)
      return Error::failure("--betas must be two numbers in [0, 1) separated by a comma, got '" +
                            text + "'");
  }
  return check(c);
}

std::string recipeJson(const TrainConfig &c) {
  json o = {{"steps", c.steps},
            {"grad_accum", c.gradAccumulation},
            {"seed", c.seed},
            {"lr", c.lr},
            {"betas", {c.beta1, c.beta2}},
            {"eps", c.eps},
            {"weight_decay", c.weightDecay},
            {"grad_clip", c.gradClip},
            {"warmup_steps", c.warmupSteps},
            {"min_lr_ratio", c.minLrRatio},
            {"bias_update_speed", c.biasUpdateSpeed}};
  o["decay_start"] = c.decayStart ? json(*c.decayStart) : json();
  return o.dump();
}

Error readRecipeJson(const std::string &text, TrainConfig &c, const std::string &source) {
  json o = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string &key) {
    return Error::failure(source + ": the recorded training recipe has no valid '" + key + "'");
  };
  if (!o.is_object())
    return Error::failure(source + ": the recorded training recipe is not a JSON object");
  auto integer = [&](const char *key, int64_t &dst) {
    if (!o.contains(key) || !o[key].is_number_integer())
      return false;
    dst = o[key].get<int64_t>();
    return true;
  };
  auto real = [&](const char *key, double &dst) {
    if (!o.contains(key) || !o[key].is_number())
      return false;
    dst = o[key].get<double>();
    return true;
  };
  int64_t seed = 0;
  for (auto [key, dst] : {std::pair<const char *, int64_t *>{"steps", &c.steps},
                          {"grad_accum", &c.gradAccumulation},
                          {"warmup_steps", &c.warmupSteps},
                          {"seed", &seed}})
    if (!integer(key, *dst))
      return bad(key);
  if (seed < 0)
    return bad("seed");
  c.seed = static_cast<uint64_t>(seed);
  for (auto [key, dst] : {std::pair<const char *, double *>{"lr", &c.lr},
                          {"eps", &c.eps},
                          {"weight_decay", &c.weightDecay},
                          {"grad_clip", &c.gradClip},
                          {"min_lr_ratio", &c.minLrRatio},
                          {"bias_update_speed", &c.biasUpdateSpeed}})
    if (!real(key, *dst))
      return bad(key);
  const json &betas = o.contains("betas") ? o["betas"] : json();
  if (!betas.is_array() || betas.size() != 2 || !betas[0].is_number() || !betas[1].is_number())
    return bad("betas");
  c.beta1 = betas[0].get<double>();
  c.beta2 = betas[1].get<double>();
  if (!o.contains("decay_start") || !(o["decay_start"].is_null() ||
                                      o["decay_start"].is_number_integer()))
    return bad("decay_start");
  c.decayStart = o["decay_start"].is_null() ? std::nullopt
                                            : std::optional<int64_t>(o["decay_start"].get<int64_t>());
  if (Error e = check(c))
    return Error::failure(source + ": the recorded training recipe is invalid: " + e.message());
  return Error::success();
}

} // namespace dsv3::rt
