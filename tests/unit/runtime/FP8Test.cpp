//===- FP8Test.cpp - FP8 numerics against the PyTorch reference -----------===//
//
// Codes must be bit-identical to PyTorch's float32 -> float8_e4m3fn cast and
// to the reference 1x128 / 128x128 quantisation; the block-scaled GEMM must
// match the reference within 1e-6 relative.
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/FP8.h"

#include "runtime/io/Safetensors.h"
#include "tests/support/Numerics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

using namespace dsv3;
using namespace dsv3::rt;

namespace {

class FP8Reference : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    auto f = SafetensorsFile::open(DSV3_SOURCE_DIR
                                   "/tests/golden/fp8/fp8_reference.safetensors");
    ASSERT_TRUE(static_cast<bool>(f)) << f.error().message();
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

namespace {

using rt::FP8Format;
using rt::FP8Operand;
using rt::ScaleRounding;

std::vector<float> randomMatrix(int64_t rows, int64_t cols, unsigned seed,
                                float range = 2.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-range, range);
  std::vector<float> v(rows * cols);
  for (float &x : v)
    x = d(rng);
  return v;
}

/// Quantized [rows, k] operand with 1x128 tiles (tileRows 1) or 128x128
/// blocks (tileRows 128), stored row-major along K.
struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  int64_t rows, k, tileRows;
  Quantized(const std::vector<float> &x, int64_t rows, int64_t k,
            int64_t tileRows, FP8Format format = FP8Format::E4M3)
      : codes(rows * k), rows(rows), k(k), tileRows(tileRows) {
    scales.resize(((rows + tileRows - 1) / tileRows) * ((k + 127) / 128));
    rt::quantizeTiles(x.data(), rows, k, tileRows, 128, format,
                      ScaleRounding::Exact, codes.data(), scales.data());
  }
  int64_t kBlocks() const { return (k + 127) / 128; }
  FP8Operand operand(FP8Format format = FP8Format::E4M3) const {
    return {codes.data(), k, 1, scales.data(), kBlocks(), 1, tileRows, format};
  }
};

/// Independent double-precision evaluation of the block-scaled product.
std::vector<double> referenceProduct(const Quantized &a, const Quantized &b,
                                     FP8Format format = FP8Format::E4M3) {
  std::vector<double> y(a.rows * b.rows, 0.0);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < b.rows; ++j)
      for (int64_t p = 0; p < a.k; ++p)
        y[i * b.rows + j] +=
            double(rt::decodeFP8(a.codes[i * a.k + p], format)) *
            a.scales[(i / a.tileRows) * a.kBlocks() + p / 128] *
            rt::decodeFP8(b.codes[j * b.k + p], format) *
            b.scales[(j / b.tileRows) * b.kBlocks() + p / 128];
  return y;
}

using dsv3::test::relativeL2;

TEST_P(FP8Shapes, FastKernelMatchesReferenceGemm) {
  std::string tag = GetParam();
  int64_t m, n, k;
  ASSERT_EQ(sscanf(tag.c_str(), "%ldx%ldx%ld", &m, &n, &k), 3);
  std::vector<uint8_t> aq = bytes(tag + ".a_fp8"), wq = bytes(tag + ".w_fp8");
  std::vector<float> as = floats(tag + ".a_scale"), ws = floats(tag + ".w_scale");
  int64_t kb = (k + 127) / 128;
  FP8Operand a{aq.data(), k, 1, as.data(), kb, 1, 1, FP8Format::E4M3};
  FP8Operand w{wq.data(), k, 1, ws.data(), kb, 1, 128, FP8Format::E4M3};
  std::vector<float> y(m * n, 7.0f);
  rt::fp8GemmNT(a, w, m, n, k, y.data(), n, /*accumulate=*/false);
  std::vector<float> want = floats(tag + ".y");
  EXPECT_LE(relativeL2(y, std::vector<double>(want.begin(), want.end())), 1e-6);
}

TEST(FP8Gemm, PartialTilesAndBlocksMatchDoubleReference) {
  // Neither K nor N nor M is a multiple of 128 (or of the 8x32 register tile).
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{13, 200, 130},
                         {1, 33, 7}, {40, 129, 384}, {9, 300, 255}}) {
    Quantized a(randomMatrix(m, k, 1), m, k, 1);
    Quantized b(randomMatrix(n, k, 2), n, k, 128);
    std::vector<float> y(m * n);
    rt::fp8GemmNT(a.operand(), b.operand(), m, n, k, y.data(), n, false);
    EXPECT_LE(relativeL2(y, referenceProduct(a, b)), 1e-6) << m << "x" << n << "x" << k;
  }
}

TEST(FP8Gemm, AccumulatesIntoY) {
  int64_t m = 16, n = 64, k = 256;
  Quantized a(randomMatrix(m, k, 3), m, k, 1), b(randomMatrix(n, k, 4), n, k, 128);
  std::vector<float> once(m * n), twice(m * n);
  rt::fp8GemmNT(a.operand(), b.operand(), m, n, k, once.data(), n, false);
  rt::fp8GemmNT(a.operand(), b.operand(), m, n, k, twice.data(), n, false);
  rt::fp8GemmNT(a.operand(), b.operand(), m, n, k, twice.data(), n, true);
  // Each K block's promoted partial is added into y, so only the rounding
  // of those additions differs from 2 * once.
  for (int64_t i = 0; i < m * n; ++i)
    EXPECT_NEAR(twice[i], 2 * once[i], 1e-5 * std::fabs(once[i]) + 1e-6);
}

/// The weight-gradient and input-gradient GEMMs read their operands
/// transposed; only strides change, so the result must be bit-identical.
TEST(FP8Gemm, TransposedStorageGivesIdenticalResults) {
  // Transposed operands take their own packing paths; K = 301 ends on an
  // odd step.
  for (int64_t k : {300, 301}) {
    int64_t m = 24, n = 160;
    Quantized a(randomMatrix(m, k, 5), m, k, 1), b(randomMatrix(n, k, 6), n, k, 128);
    auto transpose = [](const auto &v, int64_t rows, int64_t cols) {
      std::decay_t<decltype(v)> t(v.size());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          t[c * rows + r] = v[r * cols + c];
      return t;
    };
    auto aT = transpose(a.codes, m, k), bT = transpose(b.codes, n, k);
    int64_t kb = a.kBlocks(), nb = (n + 127) / 128;
    auto asT = transpose(a.scales, m, kb), bsT = transpose(b.scales, nb, kb);
    FP8Operand at{aT.data(), 1, m, asT.data(), 1, m, 1, FP8Format::E4M3};
    FP8Operand bt{bT.data(), 1, n, bsT.data(), 1, nb, 128, FP8Format::E4M3};
    std::vector<float> y(m * n), yT(m * n);
    rt::fp8GemmNT(a.operand(), b.operand(), m, n, k, y.data(), n, false);
    rt::fp8GemmNT(at, bt, m, n, k, yT.data(), n, false);
    EXPECT_EQ(y, yT) << "k = " << k;
  }
}

TEST(FP8Gemm, E5M2Operands) {
  int64_t m = 8, n = 64, k = 256;
  Quantized a(randomMatrix(m, k, 7), m, k, 1, FP8Format::E5M2);
  Quantized b(randomMatrix(n, k, 8), n, k, 128, FP8Format::E5M2);
  std::vector<float> y(m * n);
  rt::fp8GemmNT(a.operand(FP8Format::E5M2), b.operand(FP8Format::E5M2), m, n,
                k, y.data(), n, false);
  EXPECT_LE(relativeL2(y, referenceProduct(a, b, FP8Format::E5M2)), 1e-6);
}

TEST(FP8Gemm, NonFiniteInputsShowUpOnlyWhereTheyAre) {
  int64_t m = 4, n = 32, k = 256;
  std::vector<float> x = randomMatrix(m, k, 9);
  x[1 * k + 5] = INFINITY; // row 1, first K tile
  x[2 * k + 200] = NAN;    // row 2, second K tile
  Quantized a(x, m, k, 1), b(randomMatrix(n, k, 10), n, k, 128);
  // Scales come from the finite values; the bad elements encode as NaN.
  Quantized clean(randomMatrix(m, k, 9), m, k, 1);
  EXPECT_EQ(a.scales[1 * 2 + 0], clean.scales[1 * 2 + 0]);
  EXPECT_EQ(a.codes[1 * k + 5] & 0x7F, 0x7F);
  EXPECT_EQ(a.codes[2 * k + 200] & 0x7F, 0x7F);
  EXPECT_EQ(a.codes[1 * k + 6], clean.codes[1 * k + 6]);
  std::vector<float> y(m * n);
  rt::fp8GemmNT(a.operand(), b.operand(), m, n, k, y.data(), n, false);
  for (int64_t j = 0; j < n; ++j) {
    EXPECT_TRUE(std::isfinite(y[0 * n + j]));
    EXPECT_TRUE(std::isnan(y[1 * n + j]));
    EXPECT_TRUE(std::isnan(y[2 * n + j]));
    EXPECT_TRUE(std::isfinite(y[3 * n + j]));
  }
}

/// With the tile's amax at the format's maximum the scale is exactly 1, so
/// the tile codes are the plain casts of the inputs: this checks the
/// vectorized encoders against the scalar ones on every float class.
TEST(FP8Quantize, TileCodesAreTheScalarCasts) {
  for (FP8Format format : {FP8Format::E4M3, FP8Format::E5M2}) {
    float fmax = rt::fp8MaxFinite(format);
    std::vector<float> x = {fmax};
    for (uint32_t bits = 0; bits < 0x7F800000u; bits += 0x1F3D5) {
      float v;
      std::memcpy(&v, &bits, 4);
      if (v <= fmax) {
        x.push_back(v);
        x.push_back(-v);
      }
    }
    // Rounding boundaries: every code's value and the midpoints around it.
    for (int c = 0; c < 0x80; ++c) {
      float v = rt::decodeFP8(uint8_t(c), format);
      if (std::isfinite(v) && v <= fmax)
        for (float f : {v, std::nextafter(v, 0.f), std::nextafter(v, fmax)})
          if (f <= fmax)
            x.push_back(f);
    }
    int64_t cols = static_cast<int64_t>(x.size());
    std::vector<uint8_t> codes(cols);
    std::vector<float> scales(1);
    rt::quantizeTiles(x.data(), 1, cols, 1, cols, format, ScaleRounding::Exact,
                      codes.data(), scales.data());
    ASSERT_EQ(scales[0], 1.0f);
    int mismatches = 0;
    for (int64_t i = 0; i < cols; ++i)
      if (codes[i] != rt::encodeFP8(x[i], format) && ++mismatches <= 5)
        ADD_FAILURE() << "x = " << x[i] << " format " << int(format);
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(FP8Quantize, E5M2CastRoundTripsAndOverflowsToInfinity) {
  // E5M2 is the high byte of an IEEE binary16: every code decodes to the
  // half-precision value whose low byte is zero (the compiler's own _Float16
  // conversion is the reference).
  for (int c = 0; c < 256; ++c) {
    uint16_t bits = uint16_t(c << 8);
    _Float16 h;
    std::memcpy(&h, &bits, sizeof h);
    float want = float(h), got = rt::decodeE5M2(uint8_t(c));
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(got)) << c;
    else
      EXPECT_EQ(std::memcmp(&got, &want, sizeof got), 0) << c << ": " << got << " vs " << want;
  }
  for (int c = 0; c < 256; ++c) {
    float v = rt::decodeE5M2(uint8_t(c));
    if (!std::isnan(v))
      EXPECT_EQ(rt::encodeE5M2(v), c) << c;
  }
  EXPECT_EQ(rt::encodeE5M2(61439.f), 0x7B);
  EXPECT_EQ(rt::encodeE5M2(61440.f), 0x7C);
  EXPECT_EQ(rt::encodeE5M2(-INFINITY), 0xFC);
  EXPECT_EQ(rt::encodeE5M2(NAN) & 0x7F, 0x7E);
}

TEST(FP8Quantize, PowerOfTwoScalesKeepCodesInRange) {
  std::vector<float> x = randomMatrix(3, 256, 11, 300.f);
  std::vector<uint8_t> codes(x.size());
  std::vector<float> scales(3 * 2);
  rt::quantizeTiles(x.data(), 3, 256, 1, 128, FP8Format::E4M3,
                    ScaleRounding::PowerOfTwo, codes.data(), scales.data());
  // UE8M0: each tile's scale is the smallest power of two at or above
  // amax / 448 (so x / s never exceeds E4M3's largest finite value).
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t t = 0; t < 2; ++t) {
      double amax = 0;
      for (int64_t c = t * 128; c < (t + 1) * 128; ++c)
        amax = std::max(amax, std::fabs(double(x[r * 256 + c])));
      double want = std::exp2(std::ceil(std::log2(amax / 448)));
      EXPECT_EQ(double(scales[r * 2 + t]), want) << "tile " << r << "," << t;
    }
  std::vector<float> back(x.size());
  rt::dequantizeTiles(codes.data(), scales.data(), 3, 256, 1, 128,
                      FP8Format::E4M3, back.data());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NE(codes[i] & 0x7F, 0x7F); // never NaN: x / s <= 448
    EXPECT_NEAR(back[i], x[i], std::fabs(x[i]) / 8 + scales[i / 128] * 0x1p-9f);
  }
}

/// 128x1 tiles (weight-gradient operands) are 1x128 tiles of the transpose.
TEST(FP8Quantize, ColumnTilesAreRowTilesOfTheTranspose) {
  // Wide matrices are quantized in runs of column tiles: 1500 columns take
  // two runs, the second ending in a partial tile.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{300, 5}, {300, 1500}, {1500, 300}}) {
    std::vector<float> x = randomMatrix(rows, cols, 12), xt(x.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        xt[c * rows + r] = x[r * cols + c];
    int64_t tiles = (rows + 127) / 128;
    std::vector<uint8_t> q(x.size()), qt(x.size());
    std::vector<float> s(tiles * cols), st(cols * tiles);
    rt::quantizeTiles(x.data(), rows, cols, 128, 1, FP8Format::E4M3,
                      ScaleRounding::Exact, q.data(), s.data());
    rt::quantizeActivationTiles(xt.data(), cols, rows, qt.data(), st.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(q[r * cols + c], qt[c * rows + r]) << rows << "x" << cols;
    for (int64_t t = 0; t < tiles; ++t)
      for (int64_t c = 0; c < cols; ++c)
        EXPECT_EQ(s[t * cols + c], st[c * tiles + t]) << rows << "x" << cols;
  }
}

TEST(BF16Gemm, MatchesDoubleProductOfRoundedInputs) {
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{8, 32, 512},
                         {13, 70, 1001}, {64, 256, 1024}}) {
    std::vector<float> a = randomMatrix(m, k, 13), b = randomMatrix(n, k, 14);
    std::vector<uint16_t> ab(a.size()), bb(b.size());
    for (size_t i = 0; i < a.size(); ++i)
      ab[i] = rt::toBF16(a[i]);
    for (size_t i = 0; i < b.size(); ++i)
      bb[i] = rt::toBF16(b[i]);
    auto widen = [](uint16_t h) {
      uint32_t w = uint32_t(h) << 16;
      float f;
      std::memcpy(&f, &w, 4);
      return double(f);
    };
    std::vector<double> want(m * n, 0.0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t p = 0; p < k; ++p)
          want[i * n + j] += widen(ab[i * k + p]) * widen(bb[j * k + p]);
    std::vector<float> c(m * n);
    rt::bf16GemmNT(ab.data(), k, bb.data(), k, m, n, k, c.data(), n, false);
    EXPECT_LE(relativeL2(c, want), 1e-6) << m << "x" << n << "x" << k;
  }
}

} // namespace
