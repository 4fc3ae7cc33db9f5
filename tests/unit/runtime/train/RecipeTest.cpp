//===- RecipeTest.cpp - recorded recipes and command-line overrides -------===//
#include "runtime/train/Recipe.h"

#include <gtest/gtest.h>

using namespace dsv3::rt;

namespace {

TrainConfig sampleRecipe() {
  TrainConfig c;
  c.steps = 7;
  c.gradAccumulation = 3;
  c.seed = 11;
  c.lr = 2.5e-4;
  c.beta1 = 0.8;
  c.beta2 = 0.99;
  c.eps = 1e-6;
  c.weightDecay = 0.05;
  c.gradClip = 0.5;
  c.warmupSteps = 2;
  c.decayStart = 4;
  c.minLrRatio = 0.2;
  c.biasUpdateSpeed = 1e-4;
  return c;
}

TEST(Recipe, RoundTripsThroughJSON) {
  TrainConfig a = sampleRecipe(), b;
  ASSERT_FALSE(readRecipeJson(recipeJson(a), b, "m.json"));
  EXPECT_EQ(b.steps, 7);
  EXPECT_EQ(b.gradAccumulation, 3);
  EXPECT_EQ(b.seed, 11u);
  EXPECT_EQ(b.lr, 2.5e-4);
  EXPECT_EQ(b.beta1, 0.8);
  EXPECT_EQ(b.beta2, 0.99);
  EXPECT_EQ(b.eps, 1e-6);
  EXPECT_EQ(b.weightDecay, 0.05);
  EXPECT_EQ(b.gradClip, 0.5);
  EXPECT_EQ(b.warmupSteps, 2);
  EXPECT_EQ(b.decayStart, std::optional<int64_t>(4));
  EXPECT_EQ(b.minLrRatio, 0.2);
  EXPECT_EQ(b.biasUpdateSpeed, 1e-4);
  a.decayStart.reset();
  ASSERT_FALSE(readRecipeJson(recipeJson(a), b, "m.json"));
  EXPECT_FALSE(b.decayStart.has_value());
}

TEST(Recipe, FlagsWinAndAreChecked) {
  TrainConfig c = sampleRecipe();
  TrainOverrides o;
  o.lr = 1e-3;
  o.betas = "0.9,0.95";
  o.decayStart = -1;
  ASSERT_FALSE(applyOverrides(c, o));
  EXPECT_EQ(c.lr, 1e-3);
  EXPECT_EQ(c.beta1, 0.9);
  EXPECT_EQ(c.beta2, 0.95);
  EXPECT_FALSE(c.decayStart.has_value());
  EXPECT_EQ(c.steps, 7); // not overridden

  auto with = [](auto set) {
    TrainOverrides o;
    set(o);
    return o;
  };
  struct Case {
    TrainOverrides o;
    const char *message;
  } cases[] = {
      {with([](TrainOverrides &o) { o.steps = 0; }), "--steps must be positive, got 0"},
      {with([](TrainOverrides &o) { o.gradAccumulation = -2; }),
       "--grad-accum must be positive, got -2"},
      {with([](TrainOverrides &o) { o.lr = 0.0; }), "--lr must be positive, got 0"},
      {with([](TrainOverrides &o) { o.gradClip = -1.0; }),
       "--grad-clip must be a finite number >= 0, got -1"},
      {with([](TrainOverrides &o) { o.betas = "0.9"; }),
       "--betas must be two numbers in [0, 1) separated by a comma, got '0.9'"},
      {with([](TrainOverrides &o) { o.betas = "0.9,0.95x"; }),
       "--betas must be two numbers in [0, 1) separated by a comma, got '0.9,0.95x'"},
      {with([](TrainOverrides &o) { o.betas = "0.9,1.5"; }),
       "--betas must lie in [0, 1), got 0.9,1.5"},
  };
  for (const Case &k : cases) {
    TrainConfig fresh = sampleRecipe();
    Error e = applyOverrides(fresh, k.o);
    ASSERT_TRUE(static_cast<bool>(e)) << k.message;
    EXPECT_EQ(e.message(), k.message);
  }
}

TEST(Recipe, DamagedRecordsAreOneLineErrors) {
  TrainConfig c;
  struct Case {
    const char *text, *message;
  } cases[] = {
      {"[1]", "m.json: the recorded training recipe is not a JSON object"},
      {R"({"steps":"many"})", "m.json: the recorded training recipe has no valid 'steps'"},
  };
  for (const Case &k : cases) {
    Error e = readRecipeJson(k.text, c, "m.json");
    ASSERT_TRUE(static_cast<bool>(e)) << k.text;
    EXPECT_EQ(e.message(), k.message);
  }
  std::string negative = recipeJson(sampleRecipe());
  negative.replace(negative.find("\"lr\":"), 5, "\"lr\":-");
  Error e = readRecipeJson(negative, c, "m.json");
  ASSERT_TRUE(static_cast<bool>(e)) << negative;
  EXPECT_EQ(e.message(),
            "m.json: the recorded training recipe is invalid: --lr must be positive, got -0.00025");
}

} // namespace
