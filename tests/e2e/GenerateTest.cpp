//===- GenerateTest.cpp - dsv3c generate and tokenize end to end
//-----------===//
//
// Greedy generation of the golden tiny model against Hugging Face's
// (`generate` with its KV cache): every token, and every step's logits
// within 1e-4, with the CPU kernels, with the reference lowering, and with
// MTP speculative decoding (tokens). Decode steps over the latent cache
// against an independent path: the full-sequence forward (`dsv3c eval`) on
// the prompt and the generated tokens. The tokenizer and chat template
// through the command line against the golden encodings.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

using namespace dsv3;
using namespace dsv3::test;

namespace {

const SafetensorsFile *goldenGeneration() {
  static std::unique_ptr<SafetensorsFile> file(
      openOrFail(sourcePath("tests/golden/infer/tiny-generate.safetensors")));
  return file.get();
}

/// The golden prompts as a --tokens file.
std::string promptsFile(const std::string &dir) {
  const SafetensorsFile *g = goldenGeneration();
  std::string path = dir + "/prompts.safetensors";
  writeTokens(path, g->lookup("prompt_ids")->shape, readI64(*g, "prompt_ids"));
  return path;
}

double maxAbsDiff(const std::vector<float> &a, const std::vector<float> &b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

/// `dsv3c generate` of the golden prompts with `flags`; checks the tokens
/// and, with `logitBound`, the step logits against Hugging Face.
void expectGoldenGeneration(const std::string &name, const std::string &flags,
                            double logitBound) {
  std::string dir = scratchDir(name);
  RunResult r =
      runDsv3c("generate " + sourcePath("models/tiny") + " --tokens " +
               promptsFile(dir) + " --max-new-tokens 24 -o " + dir +
               "/out.safetensors " + flags);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::unique_ptr<SafetensorsFile> out(openOrFail(dir + "/out.safetensors"));
  ASSERT_NE(out, nullptr);
  const SafetensorsFile *g = goldenGeneration();
  EXPECT_EQ(readI64(*out, "generated_ids"), readI64(*g, "generated_ids"))
      << name;
  EXPECT_EQ(readI64(*out, "prompt_ids"), readI64(*g, "prompt_ids"));
  if (logitBound > 0) {
    double worst =
        maxAbsDiff(readF32(*out, "step_logits"), readF32(*g, "step_logits"));
    report(name + " step_logits max |error|", worst, logitBound);
    EXPECT_LE(worst, logitBound);
  }
}

TEST(Generate, GreedyEqualsHuggingFace) {
  expectGoldenGeneration("generate-greedy", "", 1e-4);
}

TEST(Generate, ReferenceLoweringEqualsHuggingFace) {
  expectGoldenGeneration("generate-no-ukernels", "--no-ukernels", 1e-4);
}

TEST(Generate, MTPSpeculativeGreedyEqualsHuggingFace) {
  expectGoldenGeneration("generate-mtp", "--speculative mtp", 1e-4);
}

/// A BF16 cache halves the bytes per token; rounding the cached latents
/// moves the logits by about 1e-3 here and keeps every greedy token.
TEST(Generate, BF16CacheKeepsTheGreedyTokens) {
  expectGoldenGeneration("generate-bf16-cache", "--kv-cache-dtype bf16", 1e-2);
  expectGoldenGeneration("generate-bf16-cache-no-ukernels",
                         "--kv-cache-dtype bf16 --no-ukernels", 1e-2);
}

/// Step t's logits come from decoding over the cache; the full forward of
/// prompt + generated[:-1] computes the same positions with the naive form
/// over the whole sequence.
TEST(Generate, DecodeLogitsEqualFullForward) {
  std::string dir = scratchDir("generate-vs-forward");
  RunResult r = runDsv3c("generate " + sourcePath("models/tiny") +
                         " --tokens " + promptsFile(dir) +
                         " --max-new-tokens 24 -o " + dir + "/gen.safetensors");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::unique_ptr<SafetensorsFile> gen(openOrFail(dir + "/gen.safetensors"));
  ASSERT_NE(gen, nullptr);
  std::vector<int64_t> prompt = readI64(*gen, "prompt_ids"),
                       out = readI64(*gen, "generated_ids");
  int64_t b = 2, t = 16, n = 24, len = t + n - 1;
  ASSERT_EQ(prompt.size(), size_t(b * t));
  std::vector<int64_t> sequence;
  for (int64_t i = 0; i < b; ++i) {
    sequence.insert(sequence.end(), prompt.begin() + i * t,
                    prompt.begin() + (i + 1) * t);
    sequence.insert(sequence.end(), out.begin() + i * n,
                    out.begin() + (i + 1) * n - 1);
  }
  writeTokens(dir + "/sequence.safetensors", {b, len}, sequence);
  r = runDsv3c("eval " + sourcePath("models/tiny") + " --tokens " + dir +
               "/sequence.safetensors -o " + dir + "/eval.safetensors");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::unique_ptr<SafetensorsFile> eval(openOrFail(dir + "/eval.safetensors"));
  ASSERT_NE(eval, nullptr);
  std::vector<float> full = readF32(*eval, "logits"),
                     steps = readF32(*gen, "step_logits");
  int64_t v = full.size() / (b * len);
  ASSERT_EQ(steps.size(), size_t(b * n * v));
  // Position t-1+s of the full forward chose step s.
  std::vector<float> expected;
  for (int64_t i = 0; i < b; ++i)
    expected.insert(expected.end(), full.begin() + (i * len + t - 1) * v,
                    full.begin() + (i * len + len) * v);
  double worst = maxAbsDiff(steps, expected);
  report("decode vs full forward logits max |error|", worst, 1e-5);
  EXPECT_LE(worst, 1e-5);
}

nlohmann::json goldenEncodings() {
  std::ifstream in(sourcePath("tests/golden/infer/encodings.json"));
  return nlohmann::json::parse(in, nullptr, false);
}

TEST(Generate, TokenizeMatchesGoldenEncodings) {
  nlohmann::json golden = goldenEncodings();
  ASSERT_FALSE(golden.is_discarded());
  for (std::string name : {"tokenizer-512", "tokenizer-4k"}) {
    std::string dir = scratchDir("tokenize-" + name);
    nlohmann::json strings = nlohmann::json::array(),
                   ids = nlohmann::json::array(),
                   withSpecial = nlohmann::json::array();
    for (const auto &s : golden[name]["strings"]) {
      strings.push_back(s["text"]);
      ids.push_back(s["ids"]);
      withSpecial.push_back(s["ids_with_special"]);
    }
    std::ofstream(dir + "/strings.json") << strings.dump();
    std::string args = "tokenize --tokenizer " +
                       sourcePath("tests/golden/infer/" + name) +
                       " --json-in " + dir + "/strings.json";
    RunResult plain = runDsv3c(args),
              special = runDsv3c(args + " --add-special-tokens");
    ASSERT_EQ(plain.exitCode, 0) << plain.output;
    ASSERT_EQ(special.exitCode, 0) << special.output;
    EXPECT_EQ(nlohmann::json::parse(plain.output), ids) << name;
    EXPECT_EQ(nlohmann::json::parse(special.output), withSpecial) << name;
  }
}

/// --chat renders the prompt as a user turn with the generation prompt:
/// the golden rendering's ids, BOS from the template, none added twice.
TEST(Generate, ChatPromptIsTheGoldenRendering) {
  nlohmann::json golden = goldenEncodings();
  ASSERT_FALSE(golden.is_discarded());
  const nlohmann::json *chat = nullptr;
  for (const auto &c : golden["tokenizer-512"]["chat"])
    if (c["messages"].size() == 1 && c["add_generation_prompt"] == true)
      chat = &c;
  ASSERT_NE(chat, nullptr);
  std::string dir = scratchDir("generate-chat");
  std::string question = (*chat)["messages"][0]["content"];
  RunResult r = runDsv3c(
      "generate " + sourcePath("models/tiny") + " --tokenizer " +
      sourcePath("tests/golden/infer/tokenizer-512") + " --chat --prompt '" +
      question + "' --max-new-tokens 4 -o " + dir + "/out.safetensors");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::unique_ptr<SafetensorsFile> out(openOrFail(dir + "/out.safetensors"));
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(readI64(*out, "prompt_ids"),
            (*chat)["ids"].get<std::vector<int64_t>>());
  // Generated ids are within the tokenizer's vocabulary.
  for (int64_t id : readI64(*out, "generated_ids"))
    EXPECT_TRUE(id >= 0 && id < 512) << id;
}

TEST(Generate, BadInputFailsWithOneLine) {
  struct Case {
    std::string args, message;
  };
  std::string dir = scratchDir("generate-bad");
  std::vector<Case> cases = {
      {"generate " + sourcePath("models/tiny") + " --prompt hello",
       "--prompt needs a tokenizer"},
      {"generate " + sourcePath("models/tiny") + " --tokens " +
           promptsFile(dir) + " --speculative eagle",
       "--speculative must be mtp or none"},
      {"generate " + sourcePath("models/tiny") + " --tokens " +
           promptsFile(dir) + " --max-new-tokens 0",
       "--max-new-tokens must be at least 1"},
      {"generate " + sourcePath("models/tiny") + "", "either --tokens"},
      {"tokenize --tokenizer " + dir + " --json-in x.json", "tokenizer.json"},
  };
  for (const Case &c : cases) {
    RunResult r = runDsv3c(c.args);
    EXPECT_NE(r.exitCode, 0) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n"
                                                           << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1)
        << r.output;
  }
}

} // namespace

namespace {

/// train --tokenizer reads the corpus through it and saves it with the
/// checkpoint; generate then finds it there: one directory from training
/// to generation, the prompt encoded as the golden encoding (BOS added).
TEST(Generate, TrainedCheckpointCarriesItsTokenizer) {
  nlohmann::json golden = goldenEncodings();
  ASSERT_FALSE(golden.is_discarded());
  const nlohmann::json &first = golden["tokenizer-512"]["strings"][0];
  std::string dir = scratchDir("generate-trained"), tok = sourcePath("tests/golden/infer/tokenizer-512");
  RunResult r = runDsv3c("train " + sourcePath("models/tiny/tiny.toml") + " --tokenizer " + tok +
                         " --steps 1 --save " + dir + "/ck");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  for (std::string name : {"tokenizer.json", "tokenizer_config.json"})
    EXPECT_EQ(fileBytes(dir + "/ck/" + name), fileBytes(tok + "/" + name)) << name;
  std::string text = first["text"];
  r = runDsv3c("generate " + dir + "/ck --prompt '" + text + "' --max-new-tokens 3 -o " + dir +
               "/out.safetensors");
  ASSERT_EQ(r.exitCode, 0) << r.output;
  std::unique_ptr<SafetensorsFile> out(openOrFail(dir + "/out.safetensors"));
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(readI64(*out, "prompt_ids"), first["ids_with_special"].get<std::vector<int64_t>>());
}

} // namespace
