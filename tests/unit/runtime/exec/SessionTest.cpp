//===- SessionTest.cpp - parameters, optimizer state and result buffers ---===//
//
// The session over an executable whose entry points are written here by
// hand in the packed calling convention compiled code uses (one pointer per
// argument, each to a memref descriptor), so that every value it must
// produce is known exactly.
//
//===----------------------------------------------------------------------===//
#include "runtime/exec/Session.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace dsv3::rt;

namespace {

/// The data pointer of packed argument `i` (descriptor field 1: aligned).
template <typename T>
T *data(void **args, int i) {
  int64_t *descriptor = *static_cast<int64_t **>(args[i]);
  return reinterpret_cast<T *>(descriptor[1]);
}

int calls = 0;

/// forward(params[4], x[2]) -> (y[2] = x + params[0:2], s = sum(params)).
void forward(void **args) {
  ++calls;
  float *p = data<float>(args, 0), *x = data<float>(args, 1);
  float *y = data<float>(args, 2), *s = data<float>(args, 3);
  y[0] = x[0] + p[0];
  y[1] = x[1] + p[1];
  *s = p[0] + p[1] + p[2] + p[3];
}

/// A plain update standing in for AdamW's arithmetic: p' = p - lr * g,
/// m' = m + g, v' = v + g^2 (hyper[kLearningRate] is the lr).
void adamw(void **args) {
  float *p = data<float>(args, 1), *g = data<float>(args, 2), *m = data<float>(args, 3);
  float *v = data<float>(args, 4), *h = data<float>(args, 5);
  float *np = data<float>(args, 6), *nm = data<float>(args, 7), *nv = data<float>(args, 8);
  // The vector's length: a 1-D memref descriptor is {allocated, aligned,
  // offset, size, stride}.
  int64_t n = (*static_cast<int64_t **>(args[1]))[3];
  for (int64_t i = 0; i < n; ++i) {
    np[i] = p[i] - h[kLearningRate] * g[i];
    nm[i] = m[i] + g[i];
    nv[i] = v[i] + g[i] * g[i];
  }
}

class HandWritten : public Executable {
public:
  explicit HandWritten(int64_t adamwSize = 4)
      : Executable(layout(), entries(adamwSize)) {
    setPacked(0, forward);
    setPacked(1, adamw);
  }

private:
  static ParamLayout layout() {
    ParamLayout l;
    l.totalElements = 4;
    l.slots = {{"w", 0, {2}, "weight", ""}, {"bias", 2, {2}, "routing_bias", ""}};
    return l;
  }
  static std::vector<EntryPoint> entries(int64_t n) {
    EntryPoint f{"forward",
                 {{"x", ElementType::F32, {2}}},
                 {{"y", "value", "", ElementType::F32, {2}},
                  {"s", "loss", "", ElementType::F32, {}}}};
    auto vec = [&](const char *name) { return InputSlot{name, ElementType::F32, {n}}; };
    EntryPoint a{"adamw_step",
                 {vec("params"), vec("grads"), vec("exp_avg"), vec("exp_avg_sq"),
                  {"hyper", ElementType::F32, {kNumAdamWHyper}}},
                 {{"params", "parameters", "", ElementType::F32, {n}},
                  {"exp_avg", "first_moment", "", ElementType::F32, {n}},
                  {"exp_avg_sq", "second_moment", "", ElementType::F32, {n}}}};
    return {f, a};
  }
};

TEST(Session, ResultsLiveInBuffersThatPersistAcrossCalls) {
  HandWritten exe;
  auto session = Session::create(exe);
  ASSERT_TRUE(static_cast<bool>(session)) << session.error().message();
  Session &s = **session;
  s.parameters() = {1, 2, 3, 4};
  float x[2] = {10, 20};
  ASSERT_FALSE(s.run("forward", {{x, {2}}}));
  OutputBuffers &out = s.outputs("forward");
  const float *y = out.f32(0);
  EXPECT_EQ(y[0], 11);
  EXPECT_EQ(y[1], 22);
  EXPECT_EQ(out.f32(1)[0], 10);
  EXPECT_EQ(out.tensors[1].shape, std::vector<int64_t>{});
  // A second call writes the same buffers.
  s.parameters()[0] = 5;
  ASSERT_FALSE(s.run("forward", {{x, {2}}}));
  EXPECT_EQ(&s.outputs("forward"), &out);
  EXPECT_EQ(out.f32(0), y);
  EXPECT_EQ(y[0], 15);
  EXPECT_EQ(out.f32(1)[0], 14);
}

TEST(Session, BuffersOfAnotherShapeAreRefusedBeforeTheCall) {
  HandWritten exe;
  auto session = Session::create(exe);
  ASSERT_TRUE(static_cast<bool>(session));
  float x[3] = {1, 2, 3};
  calls = 0;
  Error e = (*session)->run("forward", {{x, {3}}});
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_EQ(e.message(), "entry point 'forward': input 'x' is [2], got [3]");
  e = (*session)->run("forward", {});
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_EQ(e.message(), "entry point 'forward' takes 1 inputs and 2 outputs, got 0 and 2");
  e = (*session)->run("backward", {{x, {2}}});
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_EQ(e.message(), "no entry point 'backward'");
  EXPECT_EQ(calls, 0);
}

TEST(Session, OptimizerStepKeepsRoutingBiasesAndSwapsState) {
  HandWritten exe;
  auto session = Session::create(exe, &exe);
  ASSERT_TRUE(static_cast<bool>(session)) << session.error().message();
  Session &s = **session;
  ASSERT_TRUE(s.trains());
  EXPECT_EQ(s.moments().type, ElementType::F32);
  s.parameters() = {1, 2, 3, 4};
  float hyper[kNumAdamWHyper] = {};
  hyper[kLearningRate] = 0.5f;
  for (int step = 1; step <= 2; ++step)
    ASSERT_FALSE(s.optimizerStep({2, 4, 6, 8}, hyper)) << "step " << step;
  // Weights: two steps of p - 0.5 g; the routing bias is untouched.
  EXPECT_EQ(s.parameters(), (std::vector<float>{-1, -2, 3, 4}));
  // Moments accumulate over both steps, and are zero for the bias.
  float m[4], v[4];
  std::memcpy(m, s.moments().m.data(), sizeof m);
  std::memcpy(v, s.moments().v.data(), sizeof v);
  EXPECT_EQ(std::vector<float>(m, m + 4), (std::vector<float>{4, 8, 0, 0}));
  EXPECT_EQ(std::vector<float>(v, v + 4), (std::vector<float>{8, 32, 0, 0}));
  Error e = s.optimizerStep({1, 2}, hyper);
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_NE(e.message().find("2 gradients and 4 parameters"), std::string::npos) << e.message();
}

TEST(Session, AnOptimizerShardStepsItsSliceOnly) {
  // Two shards of the 4 parameters: [w0 w1] and [bias0 bias1].
  HandWritten model, optimizer(/*adamwSize=*/2);
  float hyper[kNumAdamWHyper] = {};
  hyper[kLearningRate] = 0.5f;
  for (int64_t index : {0, 1}) {
    auto session = Session::create(model, &optimizer, OptimizerShard{index, 2});
    ASSERT_TRUE(static_cast<bool>(session)) << session.error().message();
    Session &s = **session;
    s.parameters() = {1, 2, 3, 4};
    ASSERT_FALSE(s.optimizerStep({2, 4}, hyper));
    float m[2];
    std::memcpy(m, s.moments().m.data(), sizeof m);
    if (index == 0) {
      EXPECT_EQ(s.parameters(), (std::vector<float>{0, 0, 3, 4}));
      EXPECT_EQ(s.shardParameters(), (std::vector<float>{0, 0}));
      EXPECT_EQ(std::vector<float>(m, m + 2), (std::vector<float>{2, 4}));
    } else {
      // The routing bias keeps its values and zero moments.
      EXPECT_EQ(s.parameters(), (std::vector<float>{1, 2, 3, 4}));
      EXPECT_EQ(s.shardParameters(), (std::vector<float>{3, 4}));
      EXPECT_EQ(std::vector<float>(m, m + 2), (std::vector<float>{0, 0}));
    }
  }
  // Three shards of 4 parameters are 2 elements each, the last one padding
  // past the buffer: an optimizer over 2 elements fits, and its step leaves
  // the elements before the slice alone.
  auto last = Session::create(model, &optimizer, OptimizerShard{1, 3});
  ASSERT_TRUE(static_cast<bool>(last)) << last.error().message();
  (*last)->parameters() = {1, 2, 3, 4};
  ASSERT_FALSE((*last)->optimizerStep({2, 4}, hyper));
  EXPECT_EQ((*last)->parameters(), (std::vector<float>{1, 2, 3, 4}));
  auto missing = Session::create(model, &optimizer, OptimizerShard{2, 2});
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_EQ(missing.error().message(), "optimizer shard 2 of 2 does not exist");
}

TEST(Session, AnOptimizerForAnotherParameterCountIsRefused) {
  HandWritten model, optimizer(/*adamwSize=*/8);
  auto session = Session::create(model, &optimizer);
  ASSERT_FALSE(static_cast<bool>(session));
  EXPECT_EQ(session.error().message(),
            "adamw_step does not fit this model: input 'params' is [8] for 4 parameters");
  auto evalOnly = Session::create(model);
  ASSERT_TRUE(static_cast<bool>(evalOnly));
  EXPECT_FALSE((*evalOnly)->trains());
  float hyper[kNumAdamWHyper] = {};
  EXPECT_TRUE(static_cast<bool>((*evalOnly)->optimizerStep({0, 0, 0, 0}, hyper)));
}

} // namespace
