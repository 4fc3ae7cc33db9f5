//===- ParametersTest.cpp - seeded initialisation of the parameter buffer -===//
//
// runtime/io/Parameters.h's initializeParameters: a seeded model must get the
// same weights whatever order the compiled module lists its parameters in
// (the layout follows first use, which pipeline partitioning and F&B pair
// fusion change) and however its expert stacks are sharded, or a pipelined
// or expert-parallel run silently trains a different model than one process.
//
//===----------------------------------------------------------------------===//
#include "runtime/io/Parameters.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

using namespace dsv3::rt;

namespace {

ParamSlot slot(std::string name, std::vector<int64_t> shape, std::string role = "weight",
               std::string shard = "") {
  ParamSlot s;
  s.name = std::move(name);
  s.shape = std::move(shape);
  s.role = std::move(role);
  s.shard = std::move(shard);
  return s;
}

/// `slots` laid out back to back in the given order.
ParamLayout layoutOf(std::vector<ParamSlot> slots) {
  ParamLayout layout;
  for (ParamSlot &s : slots) {
    s.offset = layout.totalElements;
    layout.totalElements += s.numElements();
    layout.slots.push_back(s);
  }
  return layout;
}

/// Every checkpoint tensor of `layout` (experts of a stack one by one) by
/// name, initialised from `seed`.
std::map<std::string, std::vector<float>> initialised(const ParamLayout &layout, uint64_t seed) {
  std::vector<float> buffer;
  EXPECT_FALSE(initializeParameters(layout, seed, 0.02, buffer));
  std::map<std::string, std::vector<float>> tensors;
  for (const ParamSlot &s : layout.slots)
    for (const SlotTensor &t : slotTensors(s))
      tensors[t.name].assign(buffer.begin() + t.offset, buffer.begin() + t.offset + t.count);
  return tensors;
}

std::vector<ParamSlot> modelSlots() {
  return {slot("model.embed_tokens.weight", {64, 32}),
          slot("model.layers.0.input_layernorm.weight", {32}, "norm"),
          slot("model.layers.1.mlp.experts.*.up_proj.weight", {4, 8, 32}),
          slot("model.layers.1.mlp.gate.e_score_correction_bias", {4}, "routing_bias"),
          slot("lm_head.weight", {64, 32})};
}

TEST(Parameters, SeededValuesDoNotDependOnLayoutOrder) {
  std::vector<ParamSlot> slots = modelSlots();
  auto forward = initialised(layoutOf(slots), 11);
  std::vector<ParamSlot> reversed(slots.rbegin(), slots.rend());
  auto backward = initialised(layoutOf(reversed), 11);
  ASSERT_EQ(forward.size(), 1u + 1u + 4u + 1u + 1u);
  for (const auto &[name, values] : forward)
    EXPECT_EQ(values, backward.at(name)) << name;
}

TEST(Parameters, ShardedStackHoldsTheWholeStacksExperts) {
  auto whole = initialised(layoutOf(modelSlots()), 11);
  // Expert-parallel rank 1 of 2: experts 2 and 3 of the stack.
  std::vector<ParamSlot> slots = modelSlots();
  slots[2] = slot("model.layers.1.mlp.experts.*.up_proj.weight", {2, 8, 32}, "weight", "expert");
  ParamLayout layout = layoutOf(slots);
  placeShards(layout, 1);
  auto shard = initialised(layout, 11);
  for (const char *name : {"model.layers.1.mlp.experts.2.up_proj.weight",
                           "model.layers.1.mlp.experts.3.up_proj.weight"})
    EXPECT_EQ(shard.at(name), whole.at(name)) << name;
  EXPECT_EQ(shard.count("model.layers.1.mlp.experts.0.up_proj.weight"), 0u);
}

TEST(Parameters, RolesSeedsAndNamesGiveTheirValues) {
  auto a = initialised(layoutOf(modelSlots()), 11);
  auto b = initialised(layoutOf(modelSlots()), 12);
  for (float v : a.at("model.layers.0.input_layernorm.weight"))
    EXPECT_EQ(v, 1.0f);
  for (float v : a.at("model.layers.1.mlp.gate.e_score_correction_bias"))
    EXPECT_EQ(v, 0.0f);
  // Two tensors of one shape, two seeds, two experts: different draws.
  EXPECT_NE(a.at("model.embed_tokens.weight"), a.at("lm_head.weight"));
  EXPECT_NE(a.at("model.embed_tokens.weight"), b.at("model.embed_tokens.weight"));
  EXPECT_NE(a.at("model.layers.1.mlp.experts.0.up_proj.weight"),
            a.at("model.layers.1.mlp.experts.1.up_proj.weight"));
  // N(0, 0.02^2): the sample moments of 2048 draws.
  const std::vector<float> &w = a.at("model.embed_tokens.weight");
  double sum = 0, squares = 0;
  for (float v : w) {
    sum += v;
    squares += double(v) * v;
  }
  double mean = sum / w.size(), sd = std::sqrt(squares / w.size() - mean * mean);
  EXPECT_LT(std::fabs(mean), 0.002);
  EXPECT_NEAR(sd, 0.02, 0.002);
}

} // namespace
