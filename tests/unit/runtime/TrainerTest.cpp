//===- TrainerTest.cpp - learning-rate schedule and bias balancing --------===//
#include "runtime/train/Trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

using namespace dsv3::rt;

TEST(LearningRate, WarmupConstantCosine) {
  TrainConfig c;
  c.lr = 2e-3;
  c.steps = 100;
  c.warmupSteps = 10;
  c.decayStart = 60;
  c.minLrRatio = 0.1;
  EXPECT_DOUBLE_EQ(learningRate(c, 1), 2e-4);
  EXPECT_DOUBLE_EQ(learningRate(c, 10), 2e-3);
  EXPECT_DOUBLE_EQ(learningRate(c, 40), 2e-3);
  EXPECT_DOUBLE_EQ(learningRate(c, 60), 2e-3);
  // Half way through the decay: the mean of peak and floor.
  EXPECT_NEAR(learningRate(c, 80), (2e-3 + 2e-4) / 2, 1e-15);
  EXPECT_NEAR(learningRate(c, 100), 2e-4, 1e-15);
  c.decayStart.reset();
  EXPECT_DOUBLE_EQ(learningRate(c, 100), 2e-3);
}

TEST(RoutingBias, SignOfDistanceToMeanLoad) {
  // 4 experts, 12 assignments: mean 3. Overloaded experts go down,
  // underloaded up, exactly balanced ones stay.
  std::vector<int64_t> load{6, 3, 1, 2};
  float bias[] = {0.5f, 0.5f, 0.5f, -0.25f};
  double imbalance = updateRoutingBias(load, 0.01, bias);
  EXPECT_FLOAT_EQ(bias[0], 0.49f);
  EXPECT_FLOAT_EQ(bias[1], 0.5f);
  EXPECT_FLOAT_EQ(bias[2], 0.51f);
  EXPECT_FLOAT_EQ(bias[3], -0.24f);
  EXPECT_DOUBLE_EQ(imbalance, 2.0);
}

TEST(RoutingBias, ZeroSpeedLeavesBiasAlone) {
  std::vector<int64_t> load{5, 0};
  float bias[] = {1.f, 2.f};
  updateRoutingBias(load, 0.0, bias);
  EXPECT_EQ(bias[0], 1.f);
  EXPECT_EQ(bias[1], 2.f);
}
