//===- Gemm.cpp - float32 GEMM microkernel (C += A B^T) -------------------===//
//
// Called by JIT code for every `dsv3.linear` (see lowering/CPU/
// LowerUkernels.cpp). Shapes the packed kernel (PackedGemm.cpp) takes go
// there; the rest (decode-sized M, strided operands) use the unpacked kernel
// here: both operands are read along K, which is contiguous for row-major
// activations and [out, in] weights, so a 4x4 tile of dot products with
// 16-lane accumulators keeps loads at half the FMAs. Tiles are distributed
// over cores with TBB.
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/Kernels.h"

#include <tbb/blocked_range2d.h>
#include <tbb/parallel_for.h>

#include <cstring>

namespace dsv3::rt {
namespace {

typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec16Unaligned __attribute__((vector_size(64), aligned(4)));

inline Vec16 load(const float *p) {
  return *reinterpret_cast<const Vec16Unaligned *>(p);
}

inline float horizontalSum(Vec16 v) {
  float s = 0;
  for (int i = 0; i < 16; ++i)
    s += v[i];
  return s;
}

struct View {
  const float *base;
  int64_t rowStride;
  const float *row(int64_t i) const { return base + i * rowStride; }
};

/// Dot products of rows [m0, m0+MR) of A with rows [n0, n0+NR) of B.
template <int MR, int NR>
void tile(View a, View b, float *c, int64_t ldc, int64_t cColStride,
          int64_t m0, int64_t n0, int64_t k) {
  Vec16 acc[MR][NR] = {};
  int64_t kv = k & ~int64_t(15);
  for (int64_t p = 0; p < kv; p += 16) {
    Vec16 av[MR], bv[NR];
    for (int i = 0; i < MR; ++i)
      av[i] = load(a.row(m0 + i) + p);
    for (int j = 0; j < NR; ++j)
      bv[j] = load(b.row(n0 + j) + p);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j)
        acc[i][j] += av[i] * bv[j];
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float s = horizontalSum(acc[i][j]);
      const float *ar = a.row(m0 + i), *br = b.row(n0 + j);
      for (int64_t p = kv; p < k; ++p)
        s += ar[p] * br[p];
      c[(m0 + i) * ldc + (n0 + j) * cColStride] += s;
    }
}

/// Any-stride fallback; the pipeline only produces unit K strides, but the
/// kernel must stay correct for every memref it can be handed.
void strided(const MatrixF32 &a, const MatrixF32 &b, const MatrixF32 &c,
             int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const float *pa = a.data + a.offset, *pb = b.data + b.offset;
  float *pc = c.data + c.offset;
  int64_t k = a.sizes[1];
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      float s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += pa[m * a.strides[0] + p * a.strides[1]] *
             pb[n * b.strides[0] + p * b.strides[1]];
      pc[m * c.strides[0] + n * c.strides[1]] += s;
    }
}

void block(const MatrixF32 &a, const MatrixF32 &b, const MatrixF32 &c,
           int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (a.strides[1] != 1 || b.strides[1] != 1)
    return strided(a, b, c, m0, m1, n0, n1);
  View va{a.data + a.offset, a.strides[0]}, vb{b.data + b.offset, b.strides[0]};
  float *pc = c.data + c.offset;
  int64_t k = a.sizes[1], ldc = c.strides[0], cs = c.strides[1];
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4)
      tile<4, 4>(va, vb, pc, ldc, cs, m, n, k);
    for (; n < n1; ++n)
      tile<4, 1>(va, vb, pc, ldc, cs, m, n, k);
  }
  for (; m < m1; ++m) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4)
      tile<1, 4>(va, vb, pc, ldc, cs, m, n, k);
    for (; n < n1; ++n)
      tile<1, 1>(va, vb, pc, ldc, cs, m, n, k);
  }
}

} // namespace

void matmulNT(const MatrixF32 &a, const MatrixF32 &b, const MatrixF32 &c) {
  if (packedMatmulNT(a, b, c))
    return;
  int64_t m = c.sizes[0], n = c.sizes[1], k = a.sizes[1];
  // Small products do not pay for task scheduling.
  if (m * n * k < (int64_t(1) << 18)) {
    block(a, b, c, 0, m, 0, n);
    return;
  }
  // Blocks of 32x64 outputs: multiples of the 4x4 tile, small enough to
  // give both cores work on decode-sized GEMMs.
  tbb::parallel_for(tbb::blocked_range2d<int64_t>(0, m, 32, 0, n, 64),
                    [&](const tbb::blocked_range2d<int64_t> &r) {
                      block(a, b, c, r.rows().begin(), r.rows().end(),
                            r.cols().begin(), r.cols().end());
                    });
}

const KernelSymbol *kernelSymbols() {
  static const KernelSymbol symbols[] = {
      {"_mlir_ciface_dsv3rt_matmul_nt_f32",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_matmul_nt_f32)},
      {"_mlir_ciface_dsv3rt_moe_dispatch_order",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_moe_dispatch_order)},
      {"_mlir_ciface_dsv3rt_grouped_matmul_nt_f32",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_grouped_matmul_nt_f32)},
      {"_mlir_ciface_dsv3rt_grouped_matmul_nt_f32_split_k",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_grouped_matmul_nt_f32_split_k)},
      {"_mlir_ciface_dsv3rt_mla_attention",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_mla_attention)},
      {"_mlir_ciface_dsv3rt_mla_absorbed_attention",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_mla_absorbed_attention)},
      {"_mlir_ciface_dsv3rt_mla_absorbed_attention_bf16",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_mla_absorbed_attention_bf16)},
      {"_mlir_ciface_dsv3rt_mla_attention_grad",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_mla_attention_grad)},
      {"_mlir_ciface_dsv3rt_fp8_quantize",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_fp8_quantize)},
      {"_mlir_ciface_dsv3rt_fp8_dequantize",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_fp8_dequantize)},
      {"_mlir_ciface_dsv3rt_fp8_gemm",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_fp8_gemm)},
      {"_mlir_ciface_dsv3rt_fp8_quantize_stacked",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_fp8_quantize_stacked)},
      {"_mlir_ciface_dsv3rt_fp8_quantize_grouped",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_fp8_quantize_grouped)},
      {"_mlir_ciface_dsv3rt_fp8_m_grouped_gemm",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_fp8_m_grouped_gemm)},
      {"_mlir_ciface_dsv3rt_fp8_k_grouped_gemm",
       reinterpret_cast<void *>(&_mlir_ciface_dsv3rt_fp8_k_grouped_gemm)},
      {nullptr, nullptr}};
  return symbols;
}

} // namespace dsv3::rt

extern "C" void _mlir_ciface_dsv3rt_matmul_nt_f32(dsv3::rt::MatrixF32 *a,
                                                  dsv3::rt::MatrixF32 *b,
                                                  dsv3::rt::MatrixF32 *c) {
  dsv3::rt::matmulNT(*a, *b, *c);
}
