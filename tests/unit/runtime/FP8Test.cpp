//===- FP8Test.cpp - FP8 numerics against the PyTorch reference -----------===//
//
// Codes must be bit-identical to PyTorch's float32 -> float8_e4m3fn cast and
// to the reference 1x128 / 128x128 quantisation; the block-scaled GEMM must
// match the reference within 1e-6 relative.
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/FP8.h"

#include "frontends/model/Safetensors.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dsv3;

namespace {

class FP8Reference : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    auto f = SafetensorsFile::open(DSV3_SOURCE_DIR
                                   "/tests/golden/fp8/fp8_reference.safetensors");
    ASSERT_TRUE(static_cast<bool>(f)) << llvm::toString(f.takeError());
    file = f->release();
  }
  static void TearDownTestSuite() { delete file; }

  static std::vector<float> floats(const std::string &name) {
    const TensorInfo *t = file->lookup(name);
    EXPECT_NE(t, nullptr) << name;
    std::vector<float> v(t ? t->numElements() : 0);
    if (t)
      EXPECT_FALSE(static_cast<bool>(convertToF32(*t, v.data())));
    return v;
  }
  static std::vector<uint8_t> bytes(const std::string &name) {
    const TensorInfo *t = file->lookup(name);
    EXPECT_NE(t, nullptr) << name;
    return t ? std::vector<uint8_t>(t->data, t->data + t->nbytes)
             : std::vector<uint8_t>();
  }
  static SafetensorsFile *file;
};
SafetensorsFile *FP8Reference::file;

TEST_F(FP8Reference, DecodeTable) {
  std::vector<float> table = floats("e4m3fn_table");
  ASSERT_EQ(table.size(), 256u);
  for (int i = 0; i < 256; ++i) {
    float got = rt::decodeE4M3(static_cast<uint8_t>(i));
    if (std::isnan(table[i]))
      EXPECT_TRUE(std::isnan(got)) << i;
    else
      EXPECT_EQ(got, table[i]) << i;
  }
}

TEST_F(FP8Reference, CastRoundsToNearestEvenLikePyTorch) {
  std::vector<float> in = floats("round.in");
  std::vector<uint8_t> out = bytes("round.out_bits");
  ASSERT_EQ(in.size(), out.size());
  int mismatches = 0;
  for (size_t i = 0; i < in.size(); ++i)
    if (rt::encodeE4M3(in[i]) != out[i] && ++mismatches <= 5)
      ADD_FAILURE() << "x = " << in[i] << ": got 0x" << std::hex
                    << int(rt::encodeE4M3(in[i])) << ", want 0x" << int(out[i]);
  EXPECT_EQ(mismatches, 0);
  // The documented edge: (448, 464] rounds to 448, beyond is NaN.
  EXPECT_EQ(rt::encodeE4M3(464.0f), 0x7E);
  EXPECT_EQ(rt::encodeE4M3(464.1f), 0x7F);
  EXPECT_EQ(rt::encodeE4M3(-INFINITY), 0xFF);
  EXPECT_EQ(rt::encodeE4M3(NAN) & 0x7F, 0x7F);
}

class FP8Shapes : public FP8Reference,
                  public ::testing::WithParamInterface<const char *> {};

TEST_P(FP8Shapes, TileQuantizationAndBlockScaledGemm) {
  std::string tag = GetParam();
  int64_t m, n, k;
  ASSERT_EQ(sscanf(tag.c_str(), "%ldx%ldx%ld", &m, &n, &k), 3);
  std::vector<float> a = floats(tag + ".a"), w = floats(tag + ".w");
  std::vector<uint8_t> aq(m * k), wq(n * k);
  int64_t kb = (k + 127) / 128, nb = (n + 127) / 128;
  std::vector<float> as(m * kb), ws(nb * kb), y(m * n);
  rt::quantizeActivationTiles(a.data(), m, k, aq.data(), as.data());
  rt::quantizeWeightBlocks(w.data(), n, k, wq.data(), ws.data());
  EXPECT_EQ(aq, bytes(tag + ".a_fp8"));
  EXPECT_EQ(as, floats(tag + ".a_scale"));
  EXPECT_EQ(wq, bytes(tag + ".w_fp8"));
  EXPECT_EQ(ws, floats(tag + ".w_scale"));
  rt::blockScaledGemm(aq.data(), as.data(), wq.data(), ws.data(), m, n, k, y.data());
  std::vector<float> want = floats(tag + ".y");
  double diff = 0, norm = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    diff += (double(y[i]) - want[i]) * (double(y[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  EXPECT_LE(std::sqrt(diff / norm), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Reference, FP8Shapes,
                         ::testing::Values("64x256x512", "33x384x256",
                                           "128x128x1024"));

TEST(FP8Edges, ZeroTilesPartialTilesAndOutliers) {
  // K = 130: one full tile and a 2-wide tail; row 1 all zeros.
  const int64_t k = 130;
  std::vector<float> a(2 * k, 0.f);
  for (int64_t i = 0; i < 128; ++i)
    a[i] = (i % 7 - 3) * 0.01f;
  a[5] = 300.f;     // outlier sets the first tile's scale
  a[129] = -0.002f; // alone in the tail tile
  std::vector<uint8_t> q(2 * k);
  std::vector<float> s(4);
  rt::quantizeActivationTiles(a.data(), 2, k, q.data(), s.data());
  EXPECT_FLOAT_EQ(s[0], 300.f / 448.f);
  EXPECT_FLOAT_EQ(s[1], 0.002f / 448.f);
  EXPECT_EQ(q[5], rt::encodeE4M3(448.f));
  EXPECT_EQ(q[129], rt::encodeE4M3(-448.f));
  // All-zero tiles get the 1e-4 floor and zero codes.
  EXPECT_FLOAT_EQ(s[2], 1e-4f / 448.f);
  for (int64_t i = 0; i < k; ++i)
    EXPECT_EQ(q[k + i], 0);
}

} // namespace
