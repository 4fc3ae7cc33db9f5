//===- FP8.cpp - DeepSeek-V3 fine-grained FP8 quantization numerics -------===//
//
// Encoders, tile quantization and the scalar reference GEMM (see FP8.h).
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/FP8.h"
#include "runtime/kernels/Kernels.h"

#include <tbb/blocked_range2d.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

namespace dsv3::rt {

uint8_t encodeE4M3(float x) {
  uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  float a = std::fabs(x);
  // Above the midpoint between 448 and the next (non-existent) step, 480.
  if (!(a <= 464.0f))
    return sign | 0x7F;
  if (a < 0x1p-6f) {
    // Subnormals: multiples of 2^-9; 8 * 2^-9 is the smallest normal (0x08).
    return sign | static_cast<uint8_t>(std::nearbyint(a * 0x1p9f));
  }
  int e;
  float mant = std::frexp(a, &e); // a = mant * 2^e, mant in [0.5, 1)
  e -= 1;                          // a = (2 * mant) * 2^e, 2*mant in [1, 2)
  int q = static_cast<int>(std::nearbyint((2.0f * mant - 1.0f) * 8.0f));
  if (q == 8) {
    q = 0;
    ++e;
  }
  return sign | static_cast<uint8_t>(((e + 7) << 3) | q);
}

float decodeE4M3(uint8_t code) {
  float sign = code & 0x80 ? -1.0f : 1.0f;
  int e = (code >> 3) & 0xF, q = code & 0x7;
  if (e == 0xF && q == 0x7)
    return NAN;
  if (e == 0)
    return sign * std::ldexp(static_cast<float>(q), -9);
  return sign * std::ldexp(1.0f + q / 8.0f, e - 7);
}

uint8_t encodeE5M2(float x) {
  uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  float a = std::fabs(x);
  if (std::isnan(a))
    return sign | 0x7E;
  // 57344 is the largest finite value; from the midpoint to 2^16 on, Inf.
  if (a >= 61440.0f)
    return sign | 0x7C;
  if (a < 0x1p-14f) // subnormals: multiples of 2^-16
    return sign | static_cast<uint8_t>(std::nearbyint(a * 0x1p16f));
  int e;
  float mant = std::frexp(a, &e);
  e -= 1;
  int q = static_cast<int>(std::nearbyint((2.0f * mant - 1.0f) * 4.0f));
  if (q == 4) {
    q = 0;
    ++e;
  }
  return sign | static_cast<uint8_t>(((e + 15) << 2) | q);
}

float decodeE5M2(uint8_t code) {
  float sign = code & 0x80 ? -1.0f : 1.0f;
  int e = (code >> 2) & 0x1F, q = code & 0x3;
  if (e == 0x1F)
    return q ? NAN : sign * INFINITY;
  if (e == 0)
    return sign * std::ldexp(static_cast<float>(q), -16);
  return sign * std::ldexp(1.0f + q / 4.0f, e - 15);
}

uint8_t encodeFP8(float x, FP8Format format) {
  return format == FP8Format::E4M3 ? encodeE4M3(x) : encodeE5M2(x);
}
float decodeFP8(uint8_t code, FP8Format format) {
  return format == FP8Format::E4M3 ? decodeE4M3(code) : decodeE5M2(code);
}
float fp8MaxFinite(FP8Format format) {
  return format == FP8Format::E4M3 ? kE4M3Max : kE5M2Max;
}

float tileScale(float amax, FP8Format format, ScaleRounding rounding) {
  float s = std::max(amax, kMinAmax) / fp8MaxFinite(format);
  if (rounding == ScaleRounding::PowerOfTwo) {
    // UE8M0: the next power of two at or above s, so x / s stays in range.
    int e;
    float m = std::frexp(s, &e);
    if (m != 0.5f)
      s = std::ldexp(1.0f, e);
  }
  return s;
}

uint16_t toBF16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if (std::isnan(x))
    return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

namespace {

/// Branch-free versions of the encoders above for the quantization loops
/// (the compiler vectorizes them); FP8Test checks them against the plain
/// versions on every float class. `ManBits`/`Bias` describe the format.
template <int ManBits, int Bias>
inline uint8_t encodeFast(float x, float maxKept, uint32_t overflowCode) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  uint32_t sign = (bits >> 24) & 0x80;
  uint32_t abits = bits & 0x7FFFFFFF;
  float a;
  std::memcpy(&a, &abits, 4);
  constexpr int drop = 23 - ManBits;
  // Round to nearest even on the dropped bits, then rebias the exponent;
  // a mantissa carry moves into the exponent by itself.
  uint32_t normal = ((abits + ((1u << (drop - 1)) - 1) + ((abits >> drop) & 1)) >> drop) -
                    (uint32_t(127 - Bias) << ManBits);
  constexpr float minNormal = 1.0f / float(1u << (Bias - 1));
  constexpr float subStep = float(1u << (Bias - 1 + ManBits));
  uint32_t sub = static_cast<uint32_t>(static_cast<int>(std::nearbyint(a * subStep)));
  uint32_t code = a < minNormal ? sub : normal;
  code = a <= maxKept ? code : overflowCode; // NaN fails the comparison
  return static_cast<uint8_t>(sign | code);
}

inline uint8_t encodeFastE4M3(float x) { return encodeFast<3, 7>(x, 464.0f, 0x7F); }
inline uint8_t encodeFastE5M2(float x) {
  if (std::isnan(x))
    return encodeE5M2(x);
  return encodeFast<2, 15>(x, 61439.996f, 0x7C);
}

/// Quantizes rows [r0, r1) x columns [c0, c1) of x: one band of row tiles,
/// a run of whole column tiles. The column maxima of the band give each
/// tile's amax in one vectorizable sweep whatever the tile shape (1x128
/// rows, 128x1 columns, 128x128 blocks), then every row is encoded against
/// its columns' scales. `colMax` and `colScale` are scratch for the columns.
template <class Encode>
void quantizeBand(const float *x, int64_t cols, int64_t r0, int64_t r1,
                  int64_t c0, int64_t c1, int64_t tileCols, FP8Format format,
                  ScaleRounding rounding, uint8_t *codes, float *scaleRow,
                  float *colMax, float *colScale, Encode encode) {
  int64_t width = c1 - c0;
  std::fill(colMax, colMax + width, 0.0f);
  for (int64_t r = r0; r < r1; ++r) {
    const float *xr = x + r * cols + c0;
    for (int64_t c = 0; c < width; ++c) {
      float v = std::fabs(xr[c]);
      colMax[c] = v <= FLT_MAX && v > colMax[c] ? v : colMax[c]; // finite only
    }
  }
  for (int64_t t0 = 0; t0 < width; t0 += tileCols) {
    int64_t t1 = std::min(width, t0 + tileCols);
    float amax = 0;
    for (int64_t c = t0; c < t1; ++c)
      amax = std::max(amax, colMax[c]);
    float scale = tileScale(amax, format, rounding);
    scaleRow[(c0 + t0) / tileCols] = scale;
    std::fill(colScale + t0, colScale + t1, scale);
  }
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < width; ++c)
      codes[r * cols + c0 + c] = encode(x[r * cols + c0 + c] / colScale[c]);
}

} // namespace

void quantizeTiles(const float *x, int64_t rows, int64_t cols,
                   int64_t tileRows, int64_t tileCols, FP8Format format,
                   ScaleRounding rounding, uint8_t *codes, float *scales) {
  int64_t rowTiles = (rows + tileRows - 1) / tileRows;
  int64_t colTiles = (cols + tileCols - 1) / tileCols;
  // Tasks are bands of row tiles times runs of whole column tiles about
  // 1024 columns wide, so that few, tall tiles (128x1 over 128 tokens)
  // still split across cores.
  int64_t chunkCols = tileCols * std::max<int64_t>(1, 1024 / tileCols);
  int64_t chunks = (cols + chunkCols - 1) / chunkCols;
  tbb::parallel_for(
      tbb::blocked_range2d<int64_t>(0, rowTiles, 0, chunks),
      [&](const tbb::blocked_range2d<int64_t> &r) {
        std::vector<float> colMax(chunkCols), colScale(chunkCols);
        for (int64_t rt = r.rows().begin(); rt < r.rows().end(); ++rt)
          for (int64_t ch = r.cols().begin(); ch < r.cols().end(); ++ch) {
            int64_t r0 = rt * tileRows, r1 = std::min(rows, r0 + tileRows);
            int64_t c0 = ch * chunkCols, c1 = std::min(cols, c0 + chunkCols);
            float *scaleRow = scales + rt * colTiles;
            if (format == FP8Format::E4M3)
              quantizeBand(x, cols, r0, r1, c0, c1, tileCols, format, rounding,
                           codes, scaleRow, colMax.data(), colScale.data(),
                           [](float v) { return encodeFastE4M3(v); });
            else
              quantizeBand(x, cols, r0, r1, c0, c1, tileCols, format, rounding,
                           codes, scaleRow, colMax.data(), colScale.data(),
                           [](float v) { return encodeFastE5M2(v); });
          }
      });
}

void dequantizeTiles(const uint8_t *codes, const float *scales, int64_t rows,
                     int64_t cols, int64_t tileRows, int64_t tileCols,
                     FP8Format format, float *out) {
  float table[256];
  for (int i = 0; i < 256; ++i)
    table[i] = decodeFP8(static_cast<uint8_t>(i), format);
  int64_t colTiles = (cols + tileCols - 1) / tileCols;
  tbb::parallel_for(int64_t(0), rows, [&](int64_t r) {
    const float *rowScales = scales + (r / tileRows) * colTiles;
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = table[codes[r * cols + c]] * rowScales[c / tileCols];
  });
}

void quantizeActivationTiles(const float *a, int64_t m, int64_t k,
                             uint8_t *codes, float *scales) {
  quantizeTiles(a, m, k, 1, kFP8Tile, FP8Format::E4M3, ScaleRounding::Exact,
                codes, scales);
}

void quantizeWeightBlocks(const float *w, int64_t n, int64_t k,
                          uint8_t *codes, float *scales) {
  quantizeTiles(w, n, k, kFP8Tile, kFP8Tile, FP8Format::E4M3,
                ScaleRounding::Exact, codes, scales);
}

void blockScaledGemm(const uint8_t *aCodes, const float *aScales,
                     const uint8_t *wCodes, const float *wScales, int64_t m,
                     int64_t n, int64_t k, float *y) {
  float table[256];
  for (int i = 0; i < 256; ++i)
    table[i] = decodeE4M3(static_cast<uint8_t>(i));
  int64_t kBlocks = (k + kFP8Tile - 1) / kFP8Tile;
  tbb::parallel_for(int64_t(0), m, [&](int64_t r) {
    for (int64_t c = 0; c < n; ++c) {
      float acc = 0;
      for (int64_t kb = 0; kb < kBlocks; ++kb) {
        int64_t lo = kb * kFP8Tile, hi = std::min(k, lo + kFP8Tile);
        float partial = 0; // promoted to FP32 once per 128 products
        for (int64_t i = lo; i < hi; ++i)
          partial += table[aCodes[r * k + i]] * table[wCodes[c * k + i]];
        acc += partial * aScales[r * kBlocks + kb] *
               wScales[(c / kFP8Tile) * kBlocks + kb];
      }
      y[r * n + c] = acc;
    }
  });
}

} // namespace dsv3::rt

//===----------------------------------------------------------------------===//
// Entry points of JIT code (C interface of dsv3.ukernel calls)
//===----------------------------------------------------------------------===//

using dsv3::rt::DenseMatrix;
using dsv3::rt::StridedMatrix;

extern "C" void _mlir_ciface_dsv3rt_fp8_quantize(
    dsv3::rt::MatrixF32 *x, int64_t tileRows, int64_t tileCols, int64_t format,
    int64_t powerOfTwo, dsv3::rt::MatrixU8 *codes, dsv3::rt::MatrixF32 *scales) {
  using namespace dsv3::rt;
  DenseMatrix<float> in(*reinterpret_cast<StridedMatrix<float> *>(x));
  DenseMatrix<uint8_t> q(*codes);
  DenseMatrix<float> s(*reinterpret_cast<StridedMatrix<float> *>(scales));
  quantizeTiles(in.data, in.rows, in.cols, tileRows, tileCols,
                static_cast<FP8Format>(format),
                powerOfTwo ? ScaleRounding::PowerOfTwo : ScaleRounding::Exact,
                q.data, s.data);
  q.storeTo(*codes);
  s.storeTo(*reinterpret_cast<StridedMatrix<float> *>(scales));
}

extern "C" void _mlir_ciface_dsv3rt_fp8_quantize_stacked(
    dsv3::rt::Tensor3F32 *x, int64_t tileRows, int64_t tileCols, int64_t format,
    int64_t powerOfTwo, dsv3::rt::StridedTensor3<uint8_t> *codes,
    dsv3::rt::Tensor3F32 *scales) {
  using namespace dsv3::rt;
  // Each expert's matrix has its own blocks: slice by slice, in parallel
  // (one expert's matrix may be a single band).
  tbb::parallel_for(int64_t(0), x->sizes[0], [&](int64_t e) {
    StridedMatrix<float> xe = x->slice(e), se = scales->slice(e);
    StridedMatrix<uint8_t> qe = codes->slice(e);
    _mlir_ciface_dsv3rt_fp8_quantize(reinterpret_cast<MatrixF32 *>(&xe), tileRows,
                                     tileCols, format, powerOfTwo, &qe,
                                     reinterpret_cast<MatrixF32 *>(&se));
  });
}

extern "C" void _mlir_ciface_dsv3rt_fp8_dequantize(
    dsv3::rt::MatrixU8 *codes, dsv3::rt::MatrixF32 *scales, int64_t tileRows,
    int64_t tileCols, int64_t format, dsv3::rt::MatrixF32 *out) {
  using namespace dsv3::rt;
  DenseMatrix<uint8_t> q(*codes);
  DenseMatrix<float> s(*reinterpret_cast<StridedMatrix<float> *>(scales));
  DenseMatrix<float> o(*reinterpret_cast<StridedMatrix<float> *>(out));
  dequantizeTiles(q.data, s.data, q.rows, q.cols, tileRows, tileCols,
                  static_cast<FP8Format>(format), o.data);
  o.storeTo(*reinterpret_cast<StridedMatrix<float> *>(out));
}
