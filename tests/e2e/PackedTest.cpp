//===- PackedTest.cpp - packed documents equal separate sequences ---------===//
//
// Two documents packed in one row with segment_ids must give, position by
// position, the logits, MTP logits and expert choices of each document
// evaluated alone, and losses that average the two documents' losses.
//
//===----------------------------------------------------------------------===//
#include "tests/e2e/E2EUtil.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dsv3;
using namespace dsv3::test;

namespace {

struct Outputs {
  std::vector<float> logits, mtpLogits, loss, mtpLoss;
  std::vector<int64_t> experts; // layer 1 choices, [tokens, 4]
};

Outputs evaluate(const std::string &dir, const std::string &name,
                 const std::vector<int64_t> &ids,
                 const std::vector<int64_t> *segments) {
  std::string tokens = dir + "/" + name + ".tokens.safetensors";
  SafetensorsWriter w;
  int64_t t = ids.size();
  w.addI64("input_ids", {1, t}, ids);
  if (segments)
    w.addI64("segment_ids", {1, t}, *segments);
  EXPECT_FALSE(static_cast<bool>(w.write(tokens)));
  std::string out = dir + "/" + name + ".out.safetensors";
  RunResult r = runDsv3c("eval " + sourcePath("models/tiny") + " --tokens " + tokens +
                         " -o " + out);
  EXPECT_EQ(r.exitCode, 0) << r.output;
  Outputs o;
  auto f = SafetensorsFile::open(out);
  if (!f) {
    ADD_FAILURE() << f.error().message();
    return o;
  }
  o.logits = readF32(**f, "logits");
  o.mtpLogits = readF32(**f, "mtp_logits");
  o.loss = readF32(**f, "loss");
  o.mtpLoss = readF32(**f, "mtp_loss");
  const TensorInfo *e = (*f)->lookup("topk_ids.model.layers.1.mlp.gate");
  EXPECT_NE(e, nullptr);
  if (e) {
    o.experts.resize(e->numElements());
    EXPECT_FALSE(static_cast<bool>(convertToI64(*e, o.experts.data())));
  }
  return o;
}

void expectRowsEqual(const std::vector<float> &a, size_t aRow,
                     const std::vector<float> &b, size_t bRow, size_t rows,
                     size_t width, const char *what) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < width; ++c)
      ASSERT_NEAR(a[(aRow + r) * width + c], b[(bRow + r) * width + c], 1e-5)
          << what << " row " << r << " column " << c;
}

TEST(Packed, DocumentsDoNotSeeEachOther) {
  std::string dir = scratchDir("packed");
  std::vector<int64_t> a{5, 17, 300, 42, 42, 9, 511, 3},
      b{100, 7, 7, 250, 31, 480, 2, 66};
  std::vector<int64_t> packed(a), segments(8, 0);
  packed.insert(packed.end(), b.begin(), b.end());
  segments.resize(16, 1);
  Outputs oa = evaluate(dir, "a", a, nullptr), ob = evaluate(dir, "b", b, nullptr),
          op = evaluate(dir, "packed", packed, &segments);
  ASSERT_EQ(op.logits.size(), 16u * 512);
  expectRowsEqual(op.logits, 0, oa.logits, 0, 8, 512, "logits of A");
  expectRowsEqual(op.logits, 8, ob.logits, 0, 8, 512, "logits of B");
  // MTP position i predicts i+2: inside each document, positions 0..6.
  expectRowsEqual(op.mtpLogits, 0, oa.mtpLogits, 0, 7, 512, "MTP logits of A");
  expectRowsEqual(op.mtpLogits, 8, ob.mtpLogits, 0, 7, 512, "MTP logits of B");
  std::vector<int64_t> expertsAB(oa.experts);
  expertsAB.insert(expertsAB.end(), ob.experts.begin(), ob.experts.end());
  EXPECT_EQ(op.experts, expertsAB);
  // Same number of valid predictions per document: plain averages.
  EXPECT_NEAR(op.loss[0], (oa.loss[0] + ob.loss[0]) / 2, 1e-5);
  EXPECT_NEAR(op.mtpLoss[0], (oa.mtpLoss[0] + ob.mtpLoss[0]) / 2, 1e-5);
}

} // namespace
