//===- ManifestTest.cpp - the ABI manifest round trip and its checks ------===//
#include "runtime/abi/Manifest.h"

#include <gtest/gtest.h>

using namespace dsv3::rt;

namespace {

Manifest sample() {
  Manifest m;
  m.layout.totalElements = 10;
  m.layout.slots = {{"embed", 0, {2, 3}, "embedding"}, {"experts.*.w", 6, {2, 2}, "expert"}};
  m.entries = {{"forward",
                {{"logits", "logits", ""},
                 {"topk_ids.gate", "expert_ids", ""},
                 {"grad.embed", "gradient", "embed"}}}};
  m.extraJson = R"({"out_shapes":[[1,2]]})";
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
  EXPECT_EQ(back->entries[0].outputs, m.entries[0].outputs);
  EXPECT_EQ(back->entries[0].outputType(0), ElementType::F32);
  EXPECT_EQ(back->entries[0].outputType(1), ElementType::I64);
  EXPECT_EQ(back->entries[0].outputType(2), ElementType::F32);
  EXPECT_EQ(back->extraJson, R"({"out_shapes":[[1,2]]})");
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
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","outputs":[3]}]})",
       "m.json: manifest: entry point 'f' has an output without a name and a role"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","outputs":[{"name":"x"}]}]})",
       "m.json: manifest: entry point 'f' has an output without a name and a role"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","outputs":[{"name":"x","role":"grad"}]}]})",
       "m.json: manifest: output 'x' has the unknown role 'grad'"},
      {R"({"param_count":4,"params":[],"entries":[{"name":"f","outputs":[{"name":"g","role":"gradient","param":"w"}]}]})",
       "m.json: manifest: output 'g' names the unknown parameter 'w'"},
  };
  for (const Case &c : cases) {
    Expected<Manifest> m = parseManifest(c.text, "m.json");
    ASSERT_FALSE(static_cast<bool>(m)) << c.text;
    EXPECT_EQ(m.error().message(), c.message);
  }
}

} // namespace
