//===- PackedGemm.cpp - BF16 dot-product GEMMs: BF16 and block-scaled FP8 -===//
//
// One packed microkernel serves both low-precision GEMMs. Operands are
// packed into panels of BF16 pairs ([K/2][MR] for A, [K/2][NR] for B) so
// that an AVX-512 BF16 dot-product instruction multiplies two K steps of a
// 16-wide column strip at once. E4M3 and E5M2 values widen to BF16 exactly,
// so the FP8 GEMM runs at BF16 speed while reading one byte per weight: B is
// packed from FP8 codes into a per-task panel that stays in cache. The FP8
// path runs the microkernel once per 128-wide K block and adds the FP32
// partial tile times its two scales into y (the recipe's promotion).
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/FP8.h"
#include "runtime/kernels/Kernels.h"

#include <tbb/blocked_range2d.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define DSV3_HAVE_AVX512BF16 1
#endif

namespace dsv3::rt {
namespace {

constexpr int kMR = 8;  // rows of A per microkernel tile
constexpr int kNR = 32; // columns of B per microkernel tile (two vectors)

[[maybe_unused]] inline float bf16ToFloat(uint16_t bits) {
  uint32_t w = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

/// Runs the dot products of one packed A panel and one packed B panel over
/// `pairs` K pairs and hands the FP32 tile to `store(i, half, values)`:
/// row i, columns [16 half, 16 half + 16). Both operands are BF16 pairs
/// (one uint32 per pair).
#ifdef DSV3_HAVE_AVX512BF16
template <class Store>
inline void microkernel(const uint32_t *a, const uint32_t *b, int64_t pairs,
                        const Store &store) {
  __m512 acc[kMR][2];
  for (int i = 0; i < kMR; ++i)
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * kNR);
    __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * kNR + 16);
    for (int i = 0; i < kMR; ++i) {
      __m512bh ai = (__m512bh)_mm512_set1_epi32(int(a[p * kMR + i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  for (int i = 0; i < kMR; ++i) {
    store(i, 0, acc[i][0]);
    store(i, 1, acc[i][1]);
  }
}
using Lanes = __m512;
inline Lanes loadLanes(const float *p) { return _mm512_loadu_ps(p); }
inline void storeLanes(float *p, Lanes v) { _mm512_storeu_ps(p, v); }
inline Lanes fmaLanes(Lanes a, Lanes b, Lanes c) { return _mm512_fmadd_ps(a, b, c); }
inline Lanes broadcast(float x) { return _mm512_set1_ps(x); }
#else
// Portable path with the same pairwise FP32 products.
typedef float Lanes __attribute__((vector_size(64)));
template <class Store>
inline void microkernel(const uint32_t *a, const uint32_t *b, int64_t pairs,
                        const Store &store) {
  Lanes acc[kMR][2] = {};
  for (int64_t p = 0; p < pairs; ++p)
    for (int i = 0; i < kMR; ++i) {
      uint32_t av = a[p * kMR + i];
      float a0 = bf16ToFloat(uint16_t(av)), a1 = bf16ToFloat(uint16_t(av >> 16));
      for (int j = 0; j < kNR; ++j) {
        uint32_t bv = b[p * kNR + j];
        acc[i][j / 16][j % 16] += a0 * bf16ToFloat(uint16_t(bv)) +
                                  a1 * bf16ToFloat(uint16_t(bv >> 16));
      }
    }
  for (int i = 0; i < kMR; ++i) {
    store(i, 0, acc[i][0]);
    store(i, 1, acc[i][1]);
  }
}
inline Lanes loadLanes(const float *p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storeLanes(float *p, Lanes v) { std::memcpy(p, &v, sizeof v); }
inline Lanes fmaLanes(Lanes a, Lanes b, Lanes c) { return a * b + c; }
inline Lanes broadcast(float x) { return Lanes{} + x; }
#endif

/// Reads element (r, k) of an operand as BF16 bits.
struct BF16Source {
  const uint16_t *data;
  int64_t rowStride, kStride;
  uint16_t operator()(int64_t r, int64_t k) const {
    return data[r * rowStride + k * kStride];
  }
};

struct FP8Source {
  const uint8_t *codes;
  int64_t rowStride, kStride;
  const uint16_t *table; // code -> BF16 bits, exact
  uint16_t operator()(int64_t r, int64_t k) const {
    return table[codes[r * rowStride + k * kStride]];
  }
};

/// Packs rows [r0, r0 + R) x K range [k0, k1) into [pairs][R] BF16 pairs;
/// rows past `rows` and the odd K tail are zero.
template <int R, class Source>
void packPanel(const Source &src, int64_t rows, int64_t r0, int64_t k0,
               int64_t k1, uint32_t *dst) {
  int64_t pairs = (k1 - k0 + 1) / 2;
  int64_t live = std::min<int64_t>(R, rows - r0);
  for (int64_t p = 0; p < pairs; ++p) {
    int64_t k = k0 + 2 * p;
    bool hasOdd = k + 1 < k1;
    uint32_t *out = dst + p * R;
    for (int64_t i = 0; i < live; ++i) {
      uint32_t lo = src(r0 + i, k), hi = hasOdd ? src(r0 + i, k + 1) : 0;
      out[i] = lo | (hi << 16);
    }
    for (int64_t i = live; i < R; ++i)
      out[i] = 0;
  }
}

#ifdef DSV3_HAVE_AVX512BF16
/// r[i] lane j <- r[j] lane i for 16 vectors of 16 dwords.
inline void transpose16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // s[4a + b], 128-bit lane L: column 4L + b, rows 4a..4a+3.
  __m512i s[16];
  for (int a = 0; a < 16; a += 4) {
    s[a] = _mm512_unpacklo_epi64(t[a], t[a + 2]);
    s[a + 1] = _mm512_unpackhi_epi64(t[a], t[a + 2]);
    s[a + 2] = _mm512_unpacklo_epi64(t[a + 1], t[a + 3]);
    s[a + 3] = _mm512_unpackhi_epi64(t[a + 1], t[a + 3]);
  }
  for (int b = 0; b < 4; ++b) {
    __m512i p0 = _mm512_shuffle_i32x4(s[b], s[4 + b], _MM_SHUFFLE(2, 0, 2, 0));
    __m512i q0 = _mm512_shuffle_i32x4(s[b], s[4 + b], _MM_SHUFFLE(3, 1, 3, 1));
    __m512i p1 = _mm512_shuffle_i32x4(s[8 + b], s[12 + b], _MM_SHUFFLE(2, 0, 2, 0));
    __m512i q1 = _mm512_shuffle_i32x4(s[8 + b], s[12 + b], _MM_SHUFFLE(3, 1, 3, 1));
    r[b] = _mm512_shuffle_i32x4(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
    r[8 + b] = _mm512_shuffle_i32x4(p0, p1, _MM_SHUFFLE(3, 1, 3, 1));
    r[4 + b] = _mm512_shuffle_i32x4(q0, q1, _MM_SHUFFLE(2, 0, 2, 0));
    r[12 + b] = _mm512_shuffle_i32x4(q0, q1, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

/// Float32 GEMM tile rows: 12 rows x 32 columns keep 24 accumulators.
constexpr int kF32MR = 12;
constexpr int64_t kF32KC = 512; // K chunk of a packed B strip (64 KiB)

/// Packs columns [n0, n0 + 32) of B ([N, K], K-contiguous) over K range
/// [k0, k0 + kc) as dst[p][32], by 16x16 transposes; columns >= n are zero.
void packF32Strip(const float *b, int64_t ldb, int64_t n, int64_t n0, int64_t k0,
                  int64_t kc, float *dst) {
  for (int half = 0; half < 2; ++half) {
    int64_t c0 = n0 + 16 * half;
    for (int64_t p0 = 0; p0 < kc; p0 += 16) {
      int64_t w = std::min<int64_t>(16, kc - p0);
      __mmask16 mask = w == 16 ? __mmask16(0xFFFF) : __mmask16((1u << w) - 1);
      __m512i r[16];
      for (int j = 0; j < 16; ++j)
        r[j] = c0 + j < n ? _mm512_maskz_loadu_epi32(mask, b + (c0 + j) * ldb + k0 + p0)
                          : _mm512_setzero_si512();
      transpose16x16(r); // r[i] lane j = B[c0 + j][k0 + p0 + i]
      for (int64_t i = 0; i < w; ++i)
        _mm512_storeu_si512(dst + (p0 + i) * 32 + 16 * half, r[i]);
    }
  }
}

/// c[rows, cols] += a[rows, kc] panel^T for one packed 32-column strip. Rows
/// past `rows` repeat the last one (computed, never stored).
inline void f32Tile(const float *a, int64_t lda, int rows, const float *panel,
                    int64_t kc, float *c, int64_t ldc, int cols) {
  const float *ar[kF32MR];
  for (int i = 0; i < kF32MR; ++i)
    ar[i] = a + std::min(i, rows - 1) * lda;
  __m512 acc[kF32MR][2];
  for (int i = 0; i < kF32MR; ++i)
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    __m512 b0 = _mm512_loadu_ps(panel + p * 32), b1 = _mm512_loadu_ps(panel + p * 32 + 16);
    for (int i = 0; i < kF32MR; ++i) {
      __m512 ai = _mm512_set1_ps(ar[i][p]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  auto maskOf = [](int valid) {
    return valid >= 16 ? __mmask16(0xFFFF) : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
  };
  __mmask16 m0 = maskOf(cols), m1 = maskOf(cols - 16);
  for (int i = 0; i < rows; ++i) {
    float *ci = c + i * ldc;
    _mm512_mask_storeu_ps(ci, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, ci), acc[i][0]));
    _mm512_mask_storeu_ps(ci + 16, m1,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(m1, ci + 16), acc[i][1]));
  }
}
#endif

#ifdef DSV3_HAVE_AVX512BF16
/// 32 FP8 codes -> 32 BF16 values (16 pairs) through a 128-entry table of
/// magnitudes held in four registers; the sign bit is copied.
struct VectorFP8ToBF16 {
  __m512i t0, t1, t2, t3;
  explicit VectorFP8ToBF16(const uint16_t *table)
      : t0(_mm512_loadu_si512(table)), t1(_mm512_loadu_si512(table + 32)),
        t2(_mm512_loadu_si512(table + 64)), t3(_mm512_loadu_si512(table + 96)) {}
  __m512i operator()(const uint8_t *codes) const {
    return widen(_mm256_loadu_si256((const __m256i *)codes));
  }
  /// The first `count` codes (the rest widen as 0) without reading past them.
  __m512i operator()(const uint8_t *codes, int count) const {
    return widen(_mm256_maskz_loadu_epi8(__mmask32((uint64_t(1) << count) - 1), codes));
  }
  __m512i widen(__m256i codes) const {
    __m512i v = _mm512_cvtepu8_epi16(codes);
    __m512i lo = _mm512_permutex2var_epi16(t0, v, t1); // index bits 0-5
    __m512i hi = _mm512_permutex2var_epi16(t2, v, t3);
    __m512i mag = _mm512_mask_blend_epi16(
        _mm512_test_epi16_mask(v, _mm512_set1_epi16(0x40)), lo, hi);
    __m512i sign = _mm512_and_si512(_mm512_slli_epi16(v, 8), _mm512_set1_epi16(int16_t(0x8000)));
    return _mm512_or_si512(mag, sign);
  }
};

/// BF16 pairs of rows stored across K (transposed operands: dgrad's
/// weight, both wgrad operands): `even` and `odd` hold 32 rows' values at
/// K steps 2p and 2p+1; returns the pairs of rows 0-15 and 16-31.
inline std::pair<__m512i, __m512i> interleavePairs(__m512i even, __m512i odd) {
  alignas(64) static const uint16_t lowIdx[32] = {
      0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t highIdx[32] = {
      16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
      24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  return {_mm512_permutex2var_epi16(even, _mm512_load_si512(lowIdx), odd),
          _mm512_permutex2var_epi16(even, _mm512_load_si512(highIdx), odd)};
}

/// A full B panel of an operand stored along K: 32 rows x `pairs` pairs (a
/// multiple of 16), read 16 pairs at a time by `load(row, firstPair)` and
/// transposed 16x16 dwords at a time.
template <class Load>
void packPanelFast(const Load &load, int64_t pairs, uint32_t *dst) {
  for (int64_t g = 0; g < kNR / 16; ++g)
    for (int64_t q = 0; q < pairs / 16; ++q) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = load(16 * g + i, 16 * q);
      transpose16x16(r);
      for (int t = 0; t < 16; ++t)
        _mm512_storeu_si512(dst + (16 * q + t) * kNR + 16 * g, r[t]);
    }
}

/// Two full A panels (16 rows) of an operand stored along K: `pairs` (a
/// multiple of 16) pairs, each 16x16 transpose split into the 8-row halves.
template <class Load>
void packAPanelsFast(const Load &load, int64_t pairs, uint32_t *dst0,
                     uint32_t *dst1) {
  static_assert(kMR == 8, "two A panels per 16 rows");
  for (int64_t q = 0; q < pairs / 16; ++q) {
    __m512i r[16];
    for (int i = 0; i < 16; ++i)
      r[i] = load(i, 16 * q);
    transpose16x16(r);
    for (int t = 0; t < 16; ++t) {
      _mm256_storeu_si256((__m256i *)(dst0 + (16 * q + t) * kMR),
                          _mm512_castsi512_si256(r[t]));
      _mm256_storeu_si256((__m256i *)(dst1 + (16 * q + t) * kMR),
                          _mm512_extracti64x4_epi64(r[t], 1));
    }
  }
}
#endif

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int kTileShift = 7; // log2(kFP8Tile)
static_assert(int64_t(1) << kTileShift == kFP8Tile);

const uint16_t *fp8ToBF16Table(FP8Format format) {
  static const auto tables = [] {
    std::array<std::array<uint16_t, 256>, 2> t{};
    for (int f = 0; f < 2; ++f)
      for (int c = 0; c < 256; ++c)
        t[f][c] = toBF16(decodeFP8(uint8_t(c), FP8Format(f)));
    return t;
  }();
  return tables[format == FP8Format::E4M3 ? 0 : 1].data();
}

/// The shared driver. A is packed once for all tasks; each task owns a
/// range of B panels and a range of A's row panels. It packs each B panel
/// a chunk of K blocks at a time into a cache-resident buffer
/// (`packB(srcB, n0, k0, k1, dst)`) and sweeps its A rows, calling
/// `tile(packedA, packedB, pairs, m0, n0, kBlock)` for every output tile
/// and K block, K blocks in order.
/// `packA16(srcA, m0, k0, k1, dst0, dst1)` may pack 16 full rows into two
/// A panels at once and return true, or return false for the generic path.
template <class SourceA, class SourceB, class PackA16, class PackB, class Tile>
void packedGemm(const SourceA &srcA, const SourceB &srcB, int64_t m, int64_t n,
                int64_t k, int64_t kBlock, const PackA16 &packA16,
                const PackB &packB, const Tile &tile) {
  int64_t kBlocks = ceilDiv(k, kBlock), mPanels = ceilDiv(m, kMR),
          nPanels = ceilDiv(n, kNR), blockPairs = ceilDiv(kBlock, 2);
  // A: [kBlocks][mPanels][blockPairs][MR].
  // No zero fill: the packing below writes every pair the tiles read (the
  // unused tail of a short last K block is never read).
  std::unique_ptr<uint32_t[]> packedA(
      new uint32_t[kBlocks * mPanels * blockPairs * kMR]);
  int64_t panelPairs = ceilDiv(mPanels, 2);
  tbb::parallel_for(int64_t(0), kBlocks * panelPairs, [&](int64_t t) {
    int64_t kb = t / panelPairs, mp = 2 * (t % panelPairs);
    int64_t k0 = kb * kBlock, k1 = std::min(k, k0 + kBlock);
    uint32_t *dst = packedA.get() + (kb * mPanels + mp) * blockPairs * kMR;
    if (mp + 1 < mPanels &&
        packA16(srcA, mp * kMR, k0, k1, dst, dst + blockPairs * kMR))
      return;
    for (int64_t p = mp; p < std::min(mPanels, mp + 2); ++p)
      packPanel<kMR>(srcA, m, p * kMR, k0, k1,
                     dst + (p - mp) * blockPairs * kMR);
  });
  // Four B panels (128 columns, one weight block) per task unless that
  // leaves a core idle; then split A's rows too.
  int64_t nGrain = nPanels >= 8 ? 4 : 1;
  int64_t mGrain = nPanels >= 8 ? mPanels : std::max<int64_t>(1, mPanels / 4);
  tbb::parallel_for(
      tbb::blocked_range2d<int64_t>(0, nPanels, nGrain, 0, mPanels, mGrain),
      [&](const tbb::blocked_range2d<int64_t> &r) {
        // B is packed a chunk of K blocks at a time and each output tile
        // runs through the whole chunk, so a tile of y stays in L1 across
        // the chunk's K blocks (FP8's blocks are short). The chunk's slice
        // of packed A, swept once per B panel, must stay in L2: at most
        // 512 K steps and 256 KiB.
        int64_t chunk = std::clamp<int64_t>(
            (int64_t(256) << 10) / (m * kBlock * 2), 1, std::max<int64_t>(1, 512 / kBlock));
        std::vector<uint32_t> packedB(chunk * blockPairs * kNR);
        for (int64_t np = r.rows().begin(); np < r.rows().end(); ++np)
          for (int64_t kb0 = 0; kb0 < kBlocks; kb0 += chunk) {
            int64_t kb1 = std::min(kBlocks, kb0 + chunk);
            for (int64_t kb = kb0; kb < kb1; ++kb)
              packB(srcB, np * kNR, kb * kBlock, std::min(k, (kb + 1) * kBlock),
                    packedB.data() + (kb - kb0) * blockPairs * kNR);
            for (int64_t mp = r.cols().begin(); mp < r.cols().end(); ++mp)
              for (int64_t kb = kb0; kb < kb1; ++kb) {
                int64_t k0 = kb * kBlock, k1 = std::min(k, k0 + kBlock);
                tile(packedA.get() + (kb * mPanels + mp) * blockPairs * kMR,
                     packedB.data() + (kb - kb0) * blockPairs * kNR,
                     ceilDiv(k1 - k0, 2), mp * kMR, np * kNR, kb);
              }
          }
      });
}

} // namespace

void fp8GemmNT(const FP8Operand &a, const FP8Operand &b, int64_t m, int64_t n,
               int64_t k, float *y, int64_t ldy, bool accumulate) {
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i)
        std::fill(y + i * ldy, y + i * ldy + n, 0.0f);
    return;
  }
  FP8Source srcA{a.codes, a.rowStride, a.kStride, fp8ToBF16Table(a.format)};
  FP8Source srcB{b.codes, b.rowStride, b.kStride, fp8ToBF16Table(b.format)};
  auto packB = [&](const FP8Source &src, int64_t n0, int64_t k0, int64_t k1,
                   uint32_t *dst) {
#ifdef DSV3_HAVE_AVX512BF16
    if (src.rowStride == 1 && n0 + kNR <= n) {
      // Stored transposed: the panel's 32 rows are contiguous at each K step.
      VectorFP8ToBF16 convert(src.table);
      for (int64_t p = 0, k = k0; k < k1; ++p, k += 2) {
        __m512i even = convert(src.codes + n0 + k * src.kStride);
        __m512i odd = k + 1 < k1 ? convert(src.codes + n0 + (k + 1) * src.kStride)
                                 : _mm512_setzero_si512();
        auto [low, high] = interleavePairs(even, odd);
        _mm512_storeu_si512(dst + p * kNR, low);
        _mm512_storeu_si512(dst + p * kNR + 16, high);
      }
      return;
    }
    if (src.kStride == 1 && n0 + kNR <= n && k1 - k0 == kFP8Tile) {
      VectorFP8ToBF16 convert(src.table);
      const uint8_t *base = src.codes + n0 * src.rowStride + k0;
      return packPanelFast(
          [&](int64_t row, int64_t pair) {
            return convert(base + row * src.rowStride + 2 * pair);
          },
          kFP8Tile / 2, dst);
    }
#endif
    packPanel<kNR>(src, n, n0, k0, k1, dst);
  };
  auto packA16 = [&](const FP8Source &src, int64_t m0, int64_t k0, int64_t k1,
                     uint32_t *dst0, uint32_t *dst1) {
#ifdef DSV3_HAVE_AVX512BF16
    if (src.kStride == 1 && m0 + 16 <= m && k1 - k0 == kFP8Tile) {
      VectorFP8ToBF16 convert(src.table);
      const uint8_t *base = src.codes + m0 * src.rowStride + k0;
      packAPanelsFast(
          [&](int64_t row, int64_t pair) {
            return convert(base + row * src.rowStride + 2 * pair);
          },
          kFP8Tile / 2, dst0, dst1);
      return true;
    }
    if (src.rowStride == 1 && m0 + 16 <= m) {
      // Stored transposed (wgrad's output gradient): 16 contiguous rows per
      // K step; the low half of the pairs is rows 0-7, the high half 8-15.
      static_assert(kMR == 8, "two A panels per 16 rows");
      VectorFP8ToBF16 convert(src.table);
      for (int64_t p = 0, k = k0; k < k1; ++p, k += 2) {
        __m512i even = convert(src.codes + m0 + k * src.kStride, 16);
        __m512i odd = k + 1 < k1 ? convert(src.codes + m0 + (k + 1) * src.kStride, 16)
                                 : _mm512_setzero_si512();
        __m512i pairs = interleavePairs(even, odd).first;
        _mm256_storeu_si256((__m256i *)(dst0 + p * kMR), _mm512_castsi512_si256(pairs));
        _mm256_storeu_si256((__m256i *)(dst1 + p * kMR), _mm512_extracti64x4_epi64(pairs, 1));
      }
      return true;
    }
#endif
    return false;
  };
  auto tile = [&](const uint32_t *pa, const uint32_t *pb, int64_t pairs,
                  int64_t m0, int64_t n0, int64_t kb) {
    int64_t rows = std::min<int64_t>(kMR, m - m0);
    int64_t cols = std::min<int64_t>(kNR, n - n0);
    // The first K block overwrites y unless accumulating: y needs no zero
    // fill beforehand.
    bool first = kb == 0 && !accumulate;
    // Full tiles against 128x128 weight blocks (forward and input
    // gradient): the 32 columns share one block scale, a broadcast instead
    // of a gathered vector. This runs once per tile and K block, which is
    // why scale tiles are found by shifts. The promotion keeps the
    // reference's order, y += (partial * sA) * sB, on every path: results
    // do not depend on where a row falls in a tile.
    if (rows == kMR && cols == kNR && b.scaleRowTile == kFP8Tile) {
      Lanes sbBlock = broadcast(
          b.scales[kb * b.scaleKStride + (n0 >> kTileShift) * b.scaleRowStride]);
      const float *saBase = a.scales + kb * a.scaleKStride;
      float sa[kMR];
      for (int i = 0; i < kMR; ++i)
        sa[i] = saBase[(a.scaleRowTile == 1 ? m0 + i : (m0 + i) >> kTileShift) *
                       a.scaleRowStride];
      microkernel(pa, pb, pairs, [&](int i, int half, Lanes v) {
        float *yp = y + (m0 + i) * ldy + n0 + 16 * half;
        storeLanes(yp, fmaLanes(v * broadcast(sa[i]), sbBlock,
                                first ? broadcast(0.0f) : loadLanes(yp)));
      });
      return;
    }
    alignas(64) float sb[kNR] = {};
    const float *sbBase = b.scales + kb * b.scaleKStride;
    if (b.scaleRowTile == 1)
      for (int64_t j = 0; j < cols; ++j)
        sb[j] = sbBase[(n0 + j) * b.scaleRowStride];
    else
      for (int64_t j = 0; j < cols; ++j)
        sb[j] = sbBase[((n0 + j) >> kTileShift) * b.scaleRowStride];
    float sa[kMR] = {};
    const float *saBase = a.scales + kb * a.scaleKStride;
    for (int64_t i = 0; i < rows; ++i)
      sa[i] = saBase[(a.scaleRowTile == 1 ? m0 + i : (m0 + i) >> kTileShift) *
                     a.scaleRowStride];
    Lanes sbv[2] = {loadLanes(sb), loadLanes(sb + 16)};
    if (rows == kMR && cols == kNR) {
      microkernel(pa, pb, pairs, [&](int i, int half, Lanes v) {
        float *yp = y + (m0 + i) * ldy + n0 + 16 * half;
        storeLanes(yp, fmaLanes(v * broadcast(sa[i]), sbv[half],
                                first ? broadcast(0.0f) : loadLanes(yp)));
      });
      return;
    }
    microkernel(pa, pb, pairs, [&](int i, int half, Lanes v) {
      if (i >= rows)
        return;
      alignas(64) float t[16];
      storeLanes(t, v);
      float *yp = y + (m0 + i) * ldy + n0 + 16 * half;
      for (int64_t j = 0; j < 16 && 16 * half + j < cols; ++j)
        yp[j] = (first ? 0.0f : yp[j]) + t[j] * sa[i] * sb[16 * half + j];
    });
  };
  packedGemm(srcA, srcB, m, n, k, kFP8Tile, packA16, packB, tile);
}

void bf16GemmNT(const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                int64_t m, int64_t n, int64_t k, float *c, int64_t ldc,
                bool accumulate) {
  if (!accumulate)
    for (int64_t i = 0; i < m; ++i)
      std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
  if (k == 0)
    return;
  auto packB = [&](const BF16Source &src, int64_t n0, int64_t k0, int64_t k1,
                   uint32_t *dst) {
#ifdef DSV3_HAVE_AVX512BF16
    if (n0 + kNR <= n && (k1 - k0) % 32 == 0) {
      const uint16_t *base = src.data + n0 * src.rowStride + k0;
      return packPanelFast(
          [&](int64_t row, int64_t pair) {
            return _mm512_loadu_si512(base + row * src.rowStride + 2 * pair);
          },
          (k1 - k0) / 2, dst);
    }
#endif
    packPanel<kNR>(src, n, n0, k0, k1, dst);
  };
  auto packA16 = [&](const BF16Source &src, int64_t m0, int64_t k0, int64_t k1,
                     uint32_t *dst0, uint32_t *dst1) {
#ifdef DSV3_HAVE_AVX512BF16
    if (m0 + 16 <= m && (k1 - k0) % 32 == 0) {
      const uint16_t *base = src.data + m0 * src.rowStride + k0;
      packAPanelsFast(
          [&](int64_t row, int64_t pair) {
            return _mm512_loadu_si512(base + row * src.rowStride + 2 * pair);
          },
          (k1 - k0) / 2, dst0, dst1);
      return true;
    }
#endif
    return false;
  };
  auto tile = [&](const uint32_t *pa, const uint32_t *pb, int64_t pairs,
                  int64_t m0, int64_t n0, int64_t) {
    int64_t rows = std::min<int64_t>(kMR, m - m0);
    int64_t cols = std::min<int64_t>(kNR, n - n0);
    microkernel(pa, pb, pairs, [&](int i, int half, Lanes v) {
      if (i >= rows)
        return;
      float *cp = c + (m0 + i) * ldc + n0 + 16 * half;
      if (cols == kNR) {
        storeLanes(cp, loadLanes(cp) + v);
        return;
      }
      alignas(64) float t[16];
      storeLanes(t, v);
      for (int64_t j = 0; j < 16 && 16 * half + j < cols; ++j)
        cp[j] += t[j];
    });
  };
  // Long K blocks: partial tiles are only added, not scaled.
  packedGemm(BF16Source{a, lda, 1}, BF16Source{b, ldb, 1}, m, n, k, 512,
             packA16, packB, tile);
}

FP8Operand fp8Operand(const MatrixU8 &codes, const StridedMatrix<float> &scales,
                      bool transposed, int64_t scaleRowTile, FP8Format format) {
  int rowDim = transposed ? 1 : 0, kDim = 1 - rowDim;
  return FP8Operand{codes.data + codes.offset, codes.strides[rowDim],
                    codes.strides[kDim], scales.data + scales.offset,
                    scales.strides[rowDim], scales.strides[kDim], scaleRowTile,
                    format};
}

void fp8GemmInto(const FP8Operand &a, const FP8Operand &b, int64_t k,
                 const MatrixF32 &y) {
  int64_t m = y.sizes[0], n = y.sizes[1];
  if (y.strides[1] == 1) {
    fp8GemmNT(a, b, m, n, k, y.data + y.offset, y.strides[0], false);
    return;
  }
  std::vector<float> dense(m * n);
  fp8GemmNT(a, b, m, n, k, dense.data(), n, false);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      y.data[y.offset + i * y.strides[0] + j * y.strides[1]] = dense[i * n + j];
}

bool packedMatmulNT(const MatrixF32 &a, const MatrixF32 &b, const MatrixF32 &c) {
#ifdef DSV3_HAVE_AVX512BF16
  int64_t m = c.sizes[0], n = c.sizes[1], k = a.sizes[1];
  if (a.strides[1] != 1 || b.strides[1] != 1 || c.strides[1] != 1 ||
      m < kF32MR || n < 16 || k < 16)
    return false;
  const float *pa = a.data + a.offset, *pb = b.data + b.offset;
  float *pc = c.data + c.offset;
  int64_t lda = a.strides[0], ldb = b.strides[0], ldc = c.strides[0];
  // Tasks of 96 rows x 128 columns: each packs a B strip once per K chunk
  // and reuses it for 8 row tiles.
  constexpr int64_t taskRows = 8 * kF32MR, taskCols = 128;
  int64_t rowTasks = ceilDiv(m, taskRows), colTasks = ceilDiv(n, taskCols);
  auto task = [&](int64_t t) {
    int64_t r0 = (t / colTasks) * taskRows, r1 = std::min(m, r0 + taskRows);
    int64_t c0 = (t % colTasks) * taskCols, c1 = std::min(n, c0 + taskCols);
    alignas(64) float panel[kF32KC * 32];
    for (int64_t n0 = c0; n0 < c1; n0 += 32) {
      int cols = int(std::min<int64_t>(32, c1 - n0));
      for (int64_t k0 = 0; k0 < k; k0 += kF32KC) {
        int64_t kc = std::min(kF32KC, k - k0);
        packF32Strip(pb, ldb, n0 + cols, n0, k0, kc, panel);
        for (int64_t m0 = r0; m0 < r1; m0 += kF32MR)
          f32Tile(pa + m0 * lda + k0, lda, int(std::min<int64_t>(kF32MR, r1 - m0)),
                  panel, kc, pc + m0 * ldc + n0, ldc, cols);
      }
    }
  };
  if (rowTasks * colTasks == 1 || m * n * k < (int64_t(1) << 18))
    for (int64_t t = 0; t < rowTasks * colTasks; ++t)
      task(t);
  else
    tbb::parallel_for(int64_t(0), rowTasks * colTasks, task);
  return true;
#else
  return false;
#endif
}

} // namespace dsv3::rt

extern "C" void _mlir_ciface_dsv3rt_fp8_gemm(
    dsv3::rt::MatrixU8 *a, dsv3::rt::MatrixF32 *aScales, dsv3::rt::MatrixU8 *b,
    dsv3::rt::MatrixF32 *bScales, int64_t transposeA, int64_t transposeB,
    int64_t formatA, int64_t formatB, dsv3::rt::MatrixF32 *y) {
  using namespace dsv3::rt;
  // The scale tile along the row dimension is 1 when there is a scale per
  // row, else 128.
  auto operand = [](const MatrixU8 &codes, const MatrixF32 &scales,
                    bool transposed, int64_t format) {
    int rowDim = transposed ? 1 : 0;
    int64_t scaleRowTile = scales.sizes[rowDim] == codes.sizes[rowDim] ? 1 : kFP8Tile;
    return fp8Operand(codes, *reinterpret_cast<const StridedMatrix<float> *>(&scales),
                      transposed, scaleRowTile, static_cast<FP8Format>(format));
  };
  FP8Operand opA = operand(*a, *aScales, transposeA, formatA);
  FP8Operand opB = operand(*b, *bScales, transposeB, formatB);
  int64_t k = a->sizes[transposeA ? 0 : 1];
  fp8GemmInto(opA, opB, k, *y);
}
