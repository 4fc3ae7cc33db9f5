//===- FP8.h - DeepSeek-V3 fine-grained FP8 quantization numerics -*- C++ -*-===//
//
// The reference numerics the FP8 tile-quantization pass lowers to: E4M3
// encoding, 1x128 activation tiles and 128x128 weight blocks with online
// scales s = max(amax, 1e-4) / 448, and the block-scaled GEMM that promotes
// each 128-wide K partial sum to FP32 before scaling.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_KERNELS_FP8_H
#define DSV3_RUNTIME_KERNELS_FP8_H

#include <cstdint>

namespace dsv3::rt {

constexpr int64_t kFP8Tile = 128;
constexpr float kE4M3Max = 448.0f;
constexpr float kMinAmax = 1e-4f;

/// float32 -> E4M3 (fn variant: no infinities, 0x7F/0xFF are NaN), round to
/// nearest even, no saturation: |x| in (448, 464] rounds to 448, larger
/// magnitudes, infinities and NaN give NaN (PyTorch's cast).
uint8_t encodeE4M3(float x);
/// E4M3 -> float32 (exact).
float decodeE4M3(uint8_t code);

/// a [M, K] -> codes [M, K] and scales [M, ceil(K/128)], one scale per 1x128
/// tile along K.
void quantizeActivationTiles(const float *a, int64_t m, int64_t k,
                             uint8_t *codes, float *scales);
/// w [N, K] -> codes [N, K] and scales [ceil(N/128), ceil(K/128)], one scale
/// per 128x128 block.
void quantizeWeightBlocks(const float *w, int64_t n, int64_t k,
                          uint8_t *codes, float *scales);

/// y [M, N] = sum over K blocks of (FP32 partial sum of decoded products)
/// * a_scale[m, kb] * w_scale[n / 128, kb].
void blockScaledGemm(const uint8_t *aCodes, const float *aScales,
                     const uint8_t *wCodes, const float *wScales, int64_t m,
                     int64_t n, int64_t k, float *y);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_KERNELS_FP8_H
