//===- FP8.cpp - DeepSeek-V3 fine-grained FP8 quantization numerics -------===//
#include "runtime/kernels/FP8.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

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

namespace {
float scaleFor(float amax) { return std::max(amax, kMinAmax) / kE4M3Max; }
} // namespace

void quantizeActivationTiles(const float *a, int64_t m, int64_t k,
                             uint8_t *codes, float *scales) {
  int64_t tiles = (k + kFP8Tile - 1) / kFP8Tile;
  tbb::parallel_for(int64_t(0), m, [&](int64_t r) {
    for (int64_t t = 0; t < tiles; ++t) {
      int64_t lo = t * kFP8Tile, hi = std::min(k, lo + kFP8Tile);
      float amax = 0;
      for (int64_t i = lo; i < hi; ++i)
        amax = std::max(amax, std::fabs(a[r * k + i]));
      float s = scaleFor(amax);
      scales[r * tiles + t] = s;
      for (int64_t i = lo; i < hi; ++i)
        codes[r * k + i] = encodeE4M3(a[r * k + i] / s);
    }
  });
}

void quantizeWeightBlocks(const float *w, int64_t n, int64_t k,
                          uint8_t *codes, float *scales) {
  int64_t rowBlocks = (n + kFP8Tile - 1) / kFP8Tile;
  int64_t colBlocks = (k + kFP8Tile - 1) / kFP8Tile;
  tbb::parallel_for(int64_t(0), rowBlocks * colBlocks, [&](int64_t blk) {
    int64_t rb = blk / colBlocks, cb = blk % colBlocks;
    int64_t r0 = rb * kFP8Tile, r1 = std::min(n, r0 + kFP8Tile);
    int64_t c0 = cb * kFP8Tile, c1 = std::min(k, c0 + kFP8Tile);
    float amax = 0;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c)
        amax = std::max(amax, std::fabs(w[r * k + c]));
    float s = scaleFor(amax);
    scales[rb * colBlocks + cb] = s;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c)
        codes[r * k + c] = encodeE4M3(w[r * k + c] / s);
  });
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
