//===- Generate.cpp - dsv3c generate and dsv3c tokenize -------------------===//
//
// `generate` compiles the generation entry points of a model (prefill, decode
// over the latent KV cache, MTP draft steps), loads its weights into a
// session and runs rt::Generator: prompts from a token file or from text
// through the model's tokenizer (and chat template), tokens streamed as text,
// ids and step logits written to safetensors, speeds on stderr.
// `tokenize` encodes strings with a Hugging Face tokenizer.json.
//
//===----------------------------------------------------------------------===//
#include "frontends/tools/dsv3c/Driver.h"

#include "runtime/generate/Generator.h"
#include "runtime/io/Safetensors.h"
#include "runtime/text/ChatTemplate.h"
#include "runtime/text/Tokenizer.h"
#include "runtime/train/Data.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <nlohmann/json.hpp>

namespace cl = llvm::cl;

namespace dsv3c {
namespace {

cl::opt<std::string> promptOpt("prompt",
                               cl::desc("Prompt text (needs a tokenizer)"),
                               cl::value_desc("TEXT"), cl::cat(generateCat));
cl::opt<bool> chatOpt(
    "chat",
    cl::desc("Render --prompt as a user turn through the chat template"),
    cl::cat(generateCat));
cl::opt<int64_t> maxNewTokensOpt("max-new-tokens",
                                 cl::desc("Tokens to generate per prompt"),
                                 cl::init(16), cl::cat(generateCat));
cl::opt<double> temperatureOpt("temperature",
                               cl::desc("Sampling temperature (0: greedy)"),
                               cl::init(0.0), cl::cat(generateCat));
cl::opt<int64_t> topKOpt("top-k",
                         cl::desc("Keep the K most likely tokens (0: all)"),
                         cl::init(0), cl::cat(generateCat));
cl::opt<double> topPOpt("top-p",
                        cl::desc("Keep the most likely tokens up to this mass"),
                        cl::init(1.0), cl::cat(generateCat));
} // namespace

// Shared with serve (Serve.cpp) through Driver.h.
cl::opt<std::string> speculativeOpt(
    "speculative",
    cl::desc(
        "Speculative decoding: mtp (the model's MTP layer drafts) or none"),
    cl::init("none"), cl::cat(generateCat));
cl::opt<std::string> tokenizerOpt(
    "tokenizer",
    cl::desc("Directory with tokenizer.json (generate: default the model's, "
             "if any; train: tokenizes the corpus and goes into checkpoints)"),
    cl::value_desc("DIR"), cl::cat(generateCat), cl::cat(tokenizeCat),
    cl::cat(trainCat));
cl::opt<std::string>
    kvCacheDtypeOpt("kv-cache-dtype",
                    cl::desc("Element type of the latent KV cache: f32 or bf16"),
                    cl::init("f32"), cl::cat(generateCat));

namespace {

cl::opt<std::string> jsonInOpt("json-in",
                               cl::desc("JSON array of strings to encode"),
                               cl::value_desc("FILE"), cl::cat(tokenizeCat));
cl::opt<bool>
    addSpecialOpt("add-special-tokens",
                  cl::desc("Add the post-processor's special tokens (BOS)"),
                  cl::cat(tokenizeCat));

} // namespace

/// The tokenizer of --tokenizer, else the one beside the model (its
/// directory, or the .toml's), else none.
llvm::Expected<std::optional<dsv3::rt::Tokenizer>> findTokenizer() {
  std::string dir = tokenizerOpt;
  if (dir.empty()) {
    std::string model = modelPath;
    dir = llvm::sys::fs::is_directory(model)
              ? model
              : llvm::sys::path::parent_path(model).str();
    if (dir.empty())
      dir = ".";
    if (!dsv3::rt::Tokenizer::existsIn(dir))
      return std::nullopt;
  }
  auto t = dsv3::rt::Tokenizer::load(dir);
  if (!t)
    return llvm::createStringError(t.error().message());
  return std::optional<dsv3::rt::Tokenizer>(std::move(*t));
}

llvm::Expected<LoadedGenerator> loadGenerator(dsv3::Compiler &compiler,
                                              const dsv3::ModelDescription &desc,
                                              dsv3::CompileOptions options,
                                              bool speculative) {
  options.generate.verifyLen = speculative ? 2 : 0;
  options.generate.cacheBF16 = kvCacheDtypeOpt == "bf16";
  auto model = compiler.load(desc, options, cacheDirectory());
  if (!model)
    return model.takeError();
  LoadedGenerator loaded{std::move(*model), nullptr};
  auto generator = dsv3::rt::Generator::create(*loaded.model.session, speculative);
  if (!generator)
    return llvm::createStringError(generator.error().message());
  loaded.generator = std::move(*generator);
  return std::move(loaded);
}

int runGenerate() {
  if (speculativeOpt != "mtp" && speculativeOpt != "none")
    return fail("--speculative must be mtp or none, got '" + speculativeOpt +
                "'");
  if (kvCacheDtypeOpt != "f32" && kvCacheDtypeOpt != "bf16")
    return fail("--kv-cache-dtype must be f32 or bf16, got '" +
                kvCacheDtypeOpt + "'");
  if (maxNewTokensOpt < 1)
    return fail("--max-new-tokens must be at least 1");
  if (temperatureOpt < 0 || topKOpt < 0 || topPOpt <= 0 || topPOpt > 1)
    return fail("--temperature >= 0, --top-k >= 0 and 0 < --top-p <= 1");
  if (tokensPath.empty() == promptOpt.empty())
    return fail(
        "generate needs either --tokens PROMPTS.safetensors or --prompt TEXT");
  auto desc = dsv3::loadModelDescription(modelPath);
  if (!desc)
    return fail(desc.takeError());
  auto tokenizer = findTokenizer();
  if (!tokenizer)
    return fail(tokenizer.takeError());

  // The prompts, [B, T].
  std::vector<std::vector<int64_t>> prompts;
  if (!tokensPath.empty()) {
    auto data = dsv3::rt::openFixedBatch(tokensPath, desc->config.vocabSize);
    if (!data)
      return fail(data.takeError());
    std::vector<int64_t> ids;
    (*data)->fill(0, 0, 0, ids);
    int64_t b = (*data)->batch(), t = (*data)->seqLen();
    for (int64_t i = 0; i < b; ++i)
      prompts.emplace_back(ids.begin() + i * t, ids.begin() + (i + 1) * t);
  } else {
    if (!*tokenizer)
      return fail("--prompt needs a tokenizer: --tokenizer DIR, or "
                  "tokenizer.json beside the model");
    const dsv3::rt::Tokenizer &tok = **tokenizer;
    if (chatOpt) {
      auto chat = dsv3::rt::ChatTemplate::fromTokenizer(tok);
      if (!chat)
        return fail(chat.error());
      std::string text =
          chat->render({{"user", promptOpt}}, true, tok.bosToken());
      prompts.push_back(tok.encode(text, false));
    } else {
      prompts.push_back(tok.encode(promptOpt, true));
    }
    for (int64_t id : prompts.back())
      if (id >= desc->config.vocabSize)
        return fail(tok.directory() + ": token " + std::to_string(id) +
                    " is outside the model's vocabulary (" +
                    std::to_string(desc->config.vocabSize) + ")");
  }
  int64_t batch = prompts.size(), promptLen = 0;
  for (auto &p : prompts)
    promptLen = std::max<int64_t>(promptLen, p.size());
  bool speculative = speculativeOpt == "mtp";
  if (speculative && desc->config.numNextnPredictLayers == 0)
    return fail(desc->path + ": --speculative mtp needs an MTP layer "
                             "(num_nextn_predict_layers is 0)");

  auto options = compileOptions(*desc, dsv3::CompileMode::Generate, batch,
                                promptLen, false);
  if (!options)
    return fail(options.takeError());
  options->generate.prefillBatch = batch;
  options->generate.prefillLen = promptLen;
  options->generate.decodeBatch = batch;
  options->generate.capacity =
      promptLen + maxNewTokensOpt + (speculative ? 1 : 0);
  dsv3::Compiler compiler;
  auto loaded = loadGenerator(compiler, *desc, *options, speculative);
  if (!loaded)
    return fail(loaded.takeError());
  dsv3::rt::Generator &g = *loaded->generator;
  g.keepLogits(!outputPath.empty());

  std::vector<dsv3::rt::GenerateRequest> requests(batch);
  for (int64_t b = 0; b < batch; ++b) {
    requests[b].prompt = prompts[b];
    requests[b].maxNewTokens = maxNewTokensOpt;
    requests[b].sampling = {temperatureOpt, topKOpt, topPOpt,
                            seedOpt + uint64_t(b)};
  }
  std::optional<dsv3::rt::StreamingDecoder> stream;
  if (*tokenizer) {
    const dsv3::rt::Tokenizer &tok = **tokenizer;
    g.setUsableVocab(tok.vocabSize());
    if (auto eos = tok.eosId())
      for (auto &r : requests)
        r.stopTokens.push_back(*eos);
    // One sequence streams as it is generated; several print at the end.
    if (batch == 1)
      stream.emplace(tok, true);
  }
  // Untimed runs first (--repeat): the first run pays one-time costs
  // (result buffers, first touch of code and weights) that a server pays once.
  for (unsigned warm = 1; warm < repeatOpt; ++warm) {
    auto warmup = g.generate(requests);
    if (!warmup)
      return fail(warmup.error());
    g.resetStats();
  }
  if (stream)
    g.onToken([&](int64_t, int64_t token, const float *) {
      llvm::outs() << stream->push(token);
      llvm::outs().flush();
      return true;
    });
  auto results = g.generate(requests);
  if (!results)
    return fail(results.error());
  if (stream)
    llvm::outs() << stream->finish() << "\n";
  else if (*tokenizer)
    for (auto &r : *results)
      llvm::outs() << (*tokenizer)->decode(r.tokens, true) << "\n";

  const dsv3::rt::GenerateStats &s = g.stats();
  int64_t n = maxNewTokensOpt, vocab = g.vocab();
  llvm::errs() << llvm::format(
      "generate: %lld sequences, prefill %lld tokens %.1f tok/s, TTFT %.1f ms, "
      "decode %lld tokens "
      "%.1f tok/s (%.2f ms per step), latent cache %lld B/token (%lld KiB)\n",
      (long long)batch, (long long)s.prefillTokens,
      s.prefillSeconds > 0 ? s.prefillTokens / s.prefillSeconds : 0.0,
      s.firstTokenSeconds * 1e3, (long long)s.decodeTokens,
      s.decodeSeconds > 0 ? s.decodeTokens / s.decodeSeconds : 0.0,
      s.steps ? s.decodeSeconds * 1e3 / s.steps : 0.0,
      (long long)g.latentCache().bytesPerToken(),
      (long long)g.latentCache().bytes() / 1024);
  if (speculative && s.drafts > 0)
    llvm::errs() << llvm::format("generate: MTP drafts %lld, accepted %lld: "
                                 "acceptance rate %.3f, mean acceptance length "
                                 "%.3f\n",
                                 (long long)s.drafts, (long long)s.accepted,
                                 double(s.accepted) / s.drafts,
                                 1.0 + double(s.accepted) / s.drafts);
  if (s.comparedExperts > 0)
    llvm::errs() << llvm::format(
        "generate: adjacent tokens share %.3f of their routed experts\n",
        double(s.sharedExperts) / s.comparedExperts);
  if (outputPath.empty())
    return 0;
  // prompt_ids [B, T] and generated_ids [B, N] (-1 past a shorter prompt
  // and after a sequence stopped), step_logits [B, N, V].
  std::vector<int64_t> promptIds(batch * promptLen, -1), ids(batch * n, -1);
  for (int64_t b = 0; b < batch; ++b)
    std::copy(prompts[b].begin(), prompts[b].end(),
              promptIds.begin() + b * promptLen);
  std::vector<float> logits(batch * n * vocab, 0.0f);
  for (int64_t b = 0; b < batch; ++b) {
    const auto &r = (*results)[b];
    std::copy(r.tokens.begin(), r.tokens.end(), ids.begin() + b * n);
    std::copy(r.stepLogits.begin(), r.stepLogits.end(),
              logits.begin() + b * n * vocab);
  }
  dsv3::rt::SafetensorsWriter w;
  w.addI64("prompt_ids", {batch, promptLen}, promptIds);
  w.addI64("generated_ids", {batch, n}, ids);
  w.addF32("step_logits", {batch, n, vocab}, logits);
  w.setMetadata("producer", "dsv3c generate");
  if (dsv3::rt::Error e = w.write(outputPath))
    return fail(std::move(e));
  return 0;
}

int runTokenize() {
  if (tokenizerOpt.empty() || jsonInOpt.empty())
    return fail("tokenize needs --tokenizer DIR and --json-in STRINGS.json");
  auto tok = dsv3::rt::Tokenizer::load(tokenizerOpt);
  if (!tok)
    return fail(tok.error());
  auto buffer = llvm::MemoryBuffer::getFile(jsonInOpt);
  if (!buffer)
    return fail(jsonInOpt + ": " + buffer.getError().message());
  nlohmann::json strings =
      nlohmann::json::parse((*buffer)->getBuffer().str(), nullptr, false);
  if (strings.is_discarded() || !strings.is_array())
    return fail(jsonInOpt + ": expected a JSON array of strings");
  nlohmann::json out = nlohmann::json::array();
  for (const auto &s : strings) {
    if (!s.is_string())
      return fail(jsonInOpt + ": expected a JSON array of strings");
    out.push_back(tok->encode(s.get<std::string>(), addSpecialOpt));
  }
  llvm::outs() << out.dump() << "\n";
  return 0;
}

} // namespace dsv3c
