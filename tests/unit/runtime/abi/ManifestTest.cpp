//===- ManifestTest.cpp - the ABI manifest round trip and its checks ------===//
#include "runtime/abi/Manifest.h"

#include <gtest/gtest.h>

using namespace dsv3::rt;

namespace {

Manifest sample() {
  Manifest m;
  m.layout.totalElements = 10;
  m.layout.slots = {{"embed", 0, {2, 3}, "embedding", ""}, {"experts.*.w", 6, {2, 2}, "expert", ""}};
  m.entries = {{"forward",
                {{"input_ids", ElementType::I64, {1, 2}}, {"exp_avg", ElementType::BF16, {10}}},
                {{"logits", "logits", "", ElementType::F32, {1, 2, 3}},
                 {"topk_ids.gate", "expert_ids", "", ElementType::I64, {2, 2}},
                 // A pipeline chunk's integer value kept for a later chunk.
                 {"saved.3", "saved", "", ElementType::I64, {2}},
                 {"grad.embed", "gradient", "embed", ElementType::F32, {2, 3}},
                 {"loss", "loss", "", ElementType::F32, {}}}}};
  m.extraJson = R"({"mode":"eval"})";
  return m;
}

TEST(Manifest, RoundTrips) {
  Manifest m = sample();
  Expected<Manifest> back = parseManifest(writeManifest(m), "m.json");
  ASSERT_TRUE(static_cast<bool>(back)) << back.error().message();
  EXPECT_EQ(back->layout.totalElements, 10);
  ASSERT_EQ(back->layout.slots.size(), 2u);
  EXPECT_EQ(back->layout.slots[1].name, "experts.*.w");
  EXPECT_EQ(back->layout.slots[1].offset, 6);
  EXPECT_EQ(back->layout.slots[1].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(back->layout.slots[0].role, "embedding");
  EXPECT_EQ(back->layout.slots[1].role, "expert");
  ASSERT_EQ(back->entries.size(), 1u);
  EXPECT_EQ(back->entries[0].inputs, m.entries[0].inputs);
  EXPECT_EQ(back->entries[0].outputs, m.entries[0].outputs);
  EXPECT_EQ(back->entries[0].inputs[1].type, ElementType::BF16);
  EXPECT_EQ(back->entries[0].outputType(1), ElementType::I64);
  EXPECT_EQ(back->entries[0].outputType(2), ElementType::I64);
  EXPECT_EQ(back->entries[0].outputs[4].shape, std::vector<int64_t>{});
  EXPECT_EQ(back->extraJson, R"({"mode":"eval"})");
}

TEST(Manifest, DamagedManifestsAreOneLineErrors) {
  struct Case {
    const char *text, *message;
  } cases[] = {
      {"not json", "m.json: not a JSON object"},
      {R"({"params":[],"entries":[]})", "m.json: manifest: no valid 'param_count'"},
      {R"({"param_count":4,"entries":[]})", "m.json: manifest: no 'params' array"},
      {R"({"param_count":4,"params":[{"name":"w","offset":2,"shape":[3],"role":"weight"}],"entries":[]})",
       "m.json: manifest: parameter 'w' lies outside the parameter buffer"},
      {R"({"param_count":4,"params":[{"name":"w","offset":0,"shape":[-1],"role":"weight"}],"entries":[]})",
       "m.json: manifest: parameter 'w' has an invalid shape"},
      {R"({"param_count":4,"params":[{"name":"w","offset":0,"shape":[4294967296,4294967296],"role":"weight"}],"entries":[]})",
       "m.json: manifest: parameter 'w' has an invalid shape"},
      {R"({"param_count":4,"params":[{"name":"e.*.w","offset":0,"shape":[],"role":"expert"}],"entries":[]})",
       "m.json: manifest: stacked parameter 'e.*.w' has no leading experts dimension"},
      {R"({"param_count":4,"params":[{"name":"b","offset":0,"shape":[4]}],"entries":[]})",
       "m.json: manifest: parameter 'b' has no role"},
      {R"({"param_count":4,"params":[{"name":"b","offset":0,"shape":[4],"role":"routing-bias"}],"entries":[]})",
       "m.json: manifest: parameter 'b' has an unknown role 'routing-bias'"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","outputs":[]}]})",
       "m.json: manifest: an entry point without name, inputs or outputs"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[{"name":"ids","type":"i32","shape":[2]}],"outputs":[]}]})",
       "m.json: manifest: entry point 'f' has an input without a name, a known type (f32, bf16, i64) and a shape"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[{"name":"ids","type":"i64"}],"outputs":[]}]})",
       "m.json: manifest: entry point 'f' has an input without a name, a known type (f32, bf16, i64) and a shape"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[3]}]})",
       "m.json: manifest: entry point 'f' has an output without a name and a role"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[{"name":"x"}]}]})",
       "m.json: manifest: entry point 'f' has an output without a name and a role"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[{"name":"x","role":"grad","type":"f32","shape":[]}]}]})",
       "m.json: manifest: output 'x' has the unknown role 'grad'"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[{"name":"x","role":"loss","shape":[]}]}]})",
       "m.json: manifest: output 'x' has no known type (f32, bf16, i64) and valid shape"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[{"name":"x","role":"loss","type":"f32","shape":[-2]}]}]})",
       "m.json: manifest: output 'x' has no known type (f32, bf16, i64) and valid shape"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[{"name":"ids","role":"expert_ids","type":"f32","shape":[2]}]}]})",
       "m.json: manifest: output 'ids' of role expert_ids cannot be f32"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[{"name":"l","role":"loss","type":"i64","shape":[]}]}]})",
       "m.json: manifest: output 'l' of role loss cannot be i64"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","inputs":[],"outputs":[{"name":"g","role":"gradient","param":"w","type":"f32","shape":[4]}]}]})",
       "m.json: manifest: output 'g' names the unknown parameter 'w'"},
  };
  for (const Case &c : cases) {
    Expected<Manifest> m = parseManifest(c.text, "m.json");
    ASSERT_FALSE(static_cast<bool>(m)) << c.text;
    EXPECT_EQ(m.error().message(), c.message);
  }
}

} // namespace
