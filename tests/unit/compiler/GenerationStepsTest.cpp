//===- GenerationStepsTest.cpp - generation entry points against the forward
//===//
//
// The generation module of the golden tiny model (frontends/import
// importGenerator) called entry by entry through a session, against the
// Hugging Face reference of the full forward (tests/golden/tiny): @prefill's
// logits, final-normed hidden state and chosen experts; @mtp_prefill's draft logits (h_j
// with token j+1 at position j, the MTP layer's own cache rows); then, with
// the first 20 rows of both caches written, @verify and @mtp_step on
// positions 20 and 21 (q_len 2 after a cached prefix: the absorbed form and
// its mask) against the same reference positions.
//
//===----------------------------------------------------------------------===//
#include "frontends/compiler/Compiler.h"
#include "runtime/generate/LatentCache.h"
#include "runtime/io/Safetensors.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

using namespace dsv3;

namespace {

constexpr int64_t kBatch = 2, kSeq = 32, kPrefix = 20;

std::vector<float> readF32(const rt::SafetensorsFile &f,
                           const std::string &name) {
  const rt::TensorInfo *t = f.lookup(name);
  EXPECT_NE(t, nullptr) << name;
  std::vector<float> v(t ? t->numElements() : 0);
  if (t)
    EXPECT_FALSE(static_cast<bool>(rt::convertToF32(*t, v.data())));
  return v;
}

/// Max |a - b| over rows [from, from+count) of each batch row of two
/// [B, rowsA, width] and [B, rowsB, width] tensors.
double maxDiff(const float *a, int64_t rowsA, int64_t fromA, const float *b,
               int64_t rowsB, int64_t fromB, int64_t count, int64_t width) {
  double worst = 0;
  for (int64_t i = 0; i < kBatch; ++i)
    for (int64_t r = 0; r < count; ++r)
      for (int64_t c = 0; c < width; ++c)
        worst = std::max(
            worst, std::fabs(double(a[(i * rowsA + fromA + r) * width + c]) -
                             b[(i * rowsB + fromB + r) * width + c]));
  return worst;
}

const float *output(rt::Session &s, const std::string &entry,
                    const std::string &name) {
  const rt::EntryPoint *e = s.executable().entry(entry);
  for (size_t i = 0; i < e->outputs.size(); ++i)
    if (e->outputs[i].name == name)
      return s.outputs(entry).f32(i);
  ADD_FAILURE() << entry << " has no output " << name;
  return nullptr;
}

TEST(GenerationSteps, MatchTheFullForward) {
  mlir::registerPassManagerCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::registerDefaultTimingManagerCLOptions();
  auto desc = loadModelDescription(DSV3_SOURCE_DIR "/models/tiny");
  ASSERT_TRUE(static_cast<bool>(desc)) << llvm::toString(desc.takeError());
  auto golden = rt::SafetensorsFile::open(
      DSV3_SOURCE_DIR "/tests/golden/tiny/reference.safetensors");
  ASSERT_TRUE(static_cast<bool>(golden)) << golden.error().message();
  std::vector<int64_t> ids(kBatch * kSeq);
  ASSERT_FALSE(static_cast<bool>(
      rt::convertToI64(*(*golden)->lookup("input_ids"), ids.data())));
  std::vector<float> logits = readF32(**golden, "logits"),
                     hidden = readF32(**golden, "hidden_final"),
                     mtpLogits = readF32(**golden, "mtp_logits");
  const ModelConfig &c = desc->config;
  int64_t v = c.vocabSize, d = c.hiddenSize;

  Compiler compiler;
  CompileOptions o;
  o.mode = CompileMode::Generate;
  o.generate = {kBatch,         kSeq, {}, kBatch, /*capacity=*/kSeq + 4,
                /*verifyLen=*/2};
  auto model = compiler.load(*desc, o);
  ASSERT_TRUE(static_cast<bool>(model)) << llvm::toString(model.takeError());
  rt::Session &s = *model->session;

  ASSERT_FALSE(s.run("prefill", {{ids.data(), {kBatch, kSeq}}}));
  EXPECT_LE(maxDiff(output(s, "prefill", "logits"), kSeq, 0, logits.data(),
                    kSeq, 0, kSeq, v),
            1e-4);
  EXPECT_LE(maxDiff(output(s, "prefill", "hidden"), kSeq, 0, hidden.data(),
                    kSeq, 0, kSeq, d),
            1e-4);
  // The same experts for every token of every MoE layer as the reference
  // forward (which `dsv3c eval` and training reproduce): the golden ids are
  // sorted per token, the router's come in selection order.
  {
    const rt::EntryPoint *e = s.executable().entry("prefill");
    int layers = 0;
    for (size_t i = 0; i < e->outputs.size(); ++i) {
      if (e->outputs[i].role != "expert_ids")
        continue;
      ++layers;
      const rt::TensorInfo *want = (*golden)->lookup(e->outputs[i].name);
      ASSERT_NE(want, nullptr) << e->outputs[i].name;
      std::vector<int64_t> expected(want->numElements());
      ASSERT_FALSE(static_cast<bool>(rt::convertToI64(*want, expected.data())));
      int64_t k = e->outputs[i].shape.back();
      std::vector<int64_t> got(s.outputs("prefill").i64(i),
                               s.outputs("prefill").i64(i) + expected.size());
      for (size_t t = 0; t < got.size(); t += k)
        std::sort(got.begin() + t, got.begin() + t + k);
      EXPECT_EQ(got, expected) << e->outputs[i].name;
    }
    EXPECT_EQ(layers, 2);
  }
  std::vector<float> prefillHidden(output(s, "prefill", "hidden"),
                                   output(s, "prefill", "hidden") +
                                       kBatch * kSeq * d);

  // The MTP input pairs position j's hidden state with token j+1.
  std::vector<int64_t> next(kBatch * kSeq, 0);
  for (int64_t i = 0; i < kBatch; ++i)
    std::copy(ids.begin() + i * kSeq + 1, ids.begin() + (i + 1) * kSeq,
              next.begin() + i * kSeq);
  ASSERT_FALSE(
      s.run("mtp_prefill", {{next.data(), {kBatch, kSeq}},
                            {prefillHidden.data(), {kBatch, kSeq, d}}}));
  EXPECT_LE(maxDiff(output(s, "mtp_prefill", "mtp_logits"), kSeq, 0,
                    mtpLogits.data(), kSeq - 1, 0, kSeq - 1, v),
            1e-4);

  // Both caches hold the first kPrefix positions.
  const rt::EntryPoint *decode = s.executable().entry("decode");
  rt::LatentCache cache(decode->inputs[2].shape);
  auto rowsOf = [&](const std::string &entry) -> const rt::HostTensor & {
    const rt::EntryPoint *e = s.executable().entry(entry);
    for (size_t i = 0; i < e->outputs.size(); ++i)
      if (e->outputs[i].name == "kv_rows")
        return s.outputs(entry).tensors[i];
    return s.outputs(entry).tensors[0];
  };
  for (int64_t i = 0; i < kBatch; ++i) {
    cache.write(rowsOf("prefill"), 0, i, kPrefix, i, 0);
    cache.write(rowsOf("mtp_prefill"), c.numHiddenLayers, i, kPrefix, i, 0);
  }
  std::vector<int64_t> stepIds, positions;
  std::vector<float> stepHidden;
  for (int64_t i = 0; i < kBatch; ++i)
    for (int64_t p = kPrefix; p < kPrefix + 2; ++p) {
      stepIds.push_back(ids[i * kSeq + p]);
      positions.push_back(p);
      stepHidden.insert(stepHidden.end(),
                        prefillHidden.begin() + (i * kSeq + p) * d,
                        prefillHidden.begin() + (i * kSeq + p + 1) * d);
    }
  ASSERT_FALSE(s.run("verify", {{stepIds.data(), {kBatch, 2}},
                                {positions.data(), {kBatch, 2}},
                                cache.arg()}));
  double verifyError = maxDiff(output(s, "verify", "logits"), 2, 0,
                               logits.data(), kSeq, kPrefix, 2, v);
  EXPECT_LE(verifyError, 1e-4);
  // A cache row is [rms_norm(c) ; rope(k_rope)]: the prefill wrote the same.
  const rt::HostTensor &verifyRows = rowsOf("verify");
  int64_t w = cache.rowWidth();
  double rowError = 0;
  for (int64_t i = 0; i < kBatch; ++i)
    for (int64_t k = 0; k < w; ++k)
      rowError = std::max(
          rowError,
          std::fabs(double(verifyRows.f32()[(i * 2) * w + k]) -
                    rowsOf("prefill").f32()[(i * kSeq + kPrefix) * w + k]));
  EXPECT_LE(rowError, 1e-5);

  std::vector<int64_t> mtpIds;
  for (int64_t i = 0; i < kBatch; ++i)
    for (int64_t p = kPrefix; p < kPrefix + 2; ++p)
      mtpIds.push_back(ids[i * kSeq + p + 1]);
  ASSERT_FALSE(s.run("mtp_step", {{mtpIds.data(), {kBatch, 2}},
                                  {stepHidden.data(), {kBatch, 2, d}},
                                  {positions.data(), {kBatch, 2}},
                                  cache.arg()}));
  EXPECT_LE(maxDiff(output(s, "mtp_step", "mtp_logits"), 2, 0, mtpLogits.data(),
                    kSeq - 1, kPrefix, 2, v),
            1e-4);
}

} // namespace
