//===- FP8.h - DeepSeek-V3 fine-grained FP8 quantization numerics -*- C++ -*-===//
//
// The numerics the `dsv3-fp8-tile-quantize` pass lowers to: E4M3 (and E5M2)
// encoding, tile quantization with online scales s = max(amax, 1e-4) / fmax
// (optionally rounded up to a power of two, UE8M0), and the block-scaled GEMM
// that promotes each 128-wide K partial sum to FP32 before scaling. The
// scalar `blockScaledGemm` is the reference; `fp8GemmNT` (PackedGemm.cpp) is
// the fast kernel JIT code calls.
//
// Non-finite inputs: the scale of a tile is computed from its finite values
// only; NaN and +-Inf elements encode as NaN (E4M3) or keep their class
// (E5M2), so one bad value never wipes out its tile and always shows up.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_KERNELS_FP8_H
#define DSV3_RUNTIME_KERNELS_FP8_H

#include <cstdint>

namespace dsv3::rt {

constexpr int64_t kFP8Tile = 128;
constexpr float kE4M3Max = 448.0f;
constexpr float kE5M2Max = 57344.0f;
constexpr float kMinAmax = 1e-4f;

enum class FP8Format : int64_t { E4M3 = 0, E5M2 = 1 };
enum class ScaleRounding : int64_t { Exact = 0, PowerOfTwo = 1 };

/// float32 -> E4M3 (fn variant: no infinities, 0x7F/0xFF are NaN), round to
/// nearest even, no saturation: |x| in (448, 464] rounds to 448, larger
/// magnitudes, infinities and NaN give NaN (PyTorch's cast).
uint8_t encodeE4M3(float x);
/// E4M3 -> float32 (exact).
float decodeE4M3(uint8_t code);
/// float32 -> E5M2 (IEEE-style: infinities exist), round to nearest even;
/// |x| >= 61440 gives +-Inf, NaN gives 0x7E.
uint8_t encodeE5M2(float x);
/// E5M2 -> float32 (exact).
float decodeE5M2(uint8_t code);

uint8_t encodeFP8(float x, FP8Format format);
float decodeFP8(uint8_t code, FP8Format format);
float fp8MaxFinite(FP8Format format);

/// The scale of a tile whose largest finite magnitude is `amax`.
float tileScale(float amax, FP8Format format, ScaleRounding rounding);

/// x [rows, cols] (row-major) -> codes [rows, cols] and scales
/// [ceil(rows/tileRows), ceil(cols/tileCols)]: one scale per tile.
/// 1x128 tiles quantize activations along K, 128x1 tiles the operands of
/// the weight-gradient GEMM along tokens, 128x128 blocks weights.
void quantizeTiles(const float *x, int64_t rows, int64_t cols,
                   int64_t tileRows, int64_t tileCols, FP8Format format,
                   ScaleRounding rounding, uint8_t *codes, float *scales);
/// The inverse: out = decode(code) * scale of its tile.
void dequantizeTiles(const uint8_t *codes, const float *scales, int64_t rows,
                     int64_t cols, int64_t tileRows, int64_t tileCols,
                     FP8Format format, float *out);

/// The recipe's defaults: 1x128 E4M3 activation tiles.
void quantizeActivationTiles(const float *a, int64_t m, int64_t k,
                             uint8_t *codes, float *scales);
/// The recipe's defaults: 128x128 E4M3 weight blocks.
void quantizeWeightBlocks(const float *w, int64_t n, int64_t k,
                          uint8_t *codes, float *scales);

/// Reference: y [M, N] = sum over K blocks of (FP32 partial sum of decoded
/// products) * a_scale[m, kb] * w_scale[n / 128, kb]. E4M3 operands.
void blockScaledGemm(const uint8_t *aCodes, const float *aScales,
                     const uint8_t *wCodes, const float *wScales, int64_t m,
                     int64_t n, int64_t k, float *y);

/// One operand of the fast block-scaled GEMM, viewed as a logical
/// [rows, K] matrix whatever its storage order: element (r, k) is
/// codes[r * rowStride + k * kStride], its scale
/// scales[(r / scaleRowTile) * scaleRowStride + (k / 128) * scaleKStride].
struct FP8Operand {
  const uint8_t *codes;
  int64_t rowStride, kStride;
  const float *scales;
  int64_t scaleRowStride, scaleKStride;
  int64_t scaleRowTile; // 1 (per-row tiles) or 128 (blocks)
  FP8Format format;
};

/// y[m, n] (+)= sum_kb (sum_{k in kb} A(m,k) B(n,k)) * sA(m,kb) * sB(n,kb).
/// Codes are widened exactly to BF16 and multiplied with BF16 dot-product
/// instructions, 128-wide K partial sums in FP32. `y` is row-major with
/// leading dimension `ldy`; with `accumulate` false it is overwritten.
void fp8GemmNT(const FP8Operand &a, const FP8Operand &b, int64_t m, int64_t n,
               int64_t k, float *y, int64_t ldy, bool accumulate);

/// c [M, N] (+)= a [M, K] b[N, K]^T with BF16 inputs (raw bits) and FP32
/// accumulation: the BF16 baseline the FP8 kernel is measured against.
void bf16GemmNT(const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                int64_t m, int64_t n, int64_t k, float *c, int64_t ldc,
                bool accumulate);

/// float32 -> BF16 bits, round to nearest even (NaN stays NaN).
uint16_t toBF16(float x);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_KERNELS_FP8_H
