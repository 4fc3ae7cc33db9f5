//===- Kernels.h - C ABI of the runtime microkernels ------------*- C++ -*-===//
//
// Entry points that JIT-compiled code calls (through the MLIR C interface:
// each memref argument arrives as a pointer to its strided descriptor) and
// that benchmarks and tests call directly.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_KERNELS_KERNELS_H
#define DSV3_RUNTIME_KERNELS_KERNELS_H

#include "runtime/abi/MemRef.h"
#include "runtime/kernels/FP8.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace dsv3::rt {

/// Layout-compatible with MLIR's StridedMemRefType<float, 2>.
struct MatrixF32 {
  float *allocated;
  float *data;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
};

/// Rows [r0, r1) of `m`, as a view.
inline MatrixF32 rowRange(MatrixF32 m, int64_t r0, int64_t r1) {
  m.offset += r0 * m.strides[0];
  m.sizes[0] = r1 - r0;
  return m;
}
template <class T>
StridedMatrix<T> rowRange(StridedMatrix<T> m, int64_t r0, int64_t r1) {
  m.offset += r0 * m.strides[0];
  m.sizes[0] = r1 - r0;
  return m;
}
/// Columns [c0, c1) of `m`, as a view.
inline MatrixF32 columnRange(MatrixF32 m, int64_t c0, int64_t c1) {
  m.offset += c0 * m.strides[1];
  m.sizes[1] = c1 - c0;
  return m;
}
/// Sets every element of the view to 0.
inline void fillZero(const MatrixF32 &m) {
  for (int64_t r = 0; r < m.sizes[0]; ++r)
    for (int64_t c = 0; c < m.sizes[1]; ++c)
      m.data[m.offset + r * m.strides[0] + c * m.strides[1]] = 0.0f;
}

using MatrixU8 = StridedMatrix<uint8_t>; // FP8 codes (f8E4M3FN / f8E5M2)
using MatrixI64 = StridedMatrix<int64_t>;

/// Layout-compatible with MLIR's StridedMemRefType<T, 3>.
template <class T> struct StridedTensor3 {
  T *allocated;
  T *data;
  int64_t offset;
  int64_t sizes[3];
  int64_t strides[3];
  /// Slice `i` of the leading dimension as a matrix view.
  StridedMatrix<T> slice(int64_t i) const {
    return {allocated, data, offset + i * strides[0], {sizes[1], sizes[2]},
            {strides[1], strides[2]}};
  }
};
using Tensor3F32 = StridedTensor3<float>;


/// Layout-compatible with MLIR's StridedMemRefType<float, 4>.
struct Tensor4F32 {
  float *allocated;
  float *data;
  int64_t offset;
  int64_t sizes[4];
  int64_t strides[4];
};

/// C[m,n] += sum_k A[m,k] * B[n,k] for A [M,K], B [N,K], C [M,N]. Blocked
/// for registers, vectorised, and split over cores with TBB when large.
void matmulNT(const MatrixF32 &a, const MatrixF32 &b, const MatrixF32 &c);

/// Stable counting sort of the (token, slot) pairs of `ids [N, K]` by expert:
/// rowOfSlot [N, K], slotOfRow [N*K] and group bounds offsets [E+1]. Ids
/// outside [0, E) (only NaN router scores produce them) count as expert 0.
void moeDispatchOrder(const MatrixI64 &ids, int64_t numExperts,
                      const MatrixI64 &rowOfSlot, const VectorI64 &slotOfRow,
                      const VectorI64 &offsets);

/// y[r] = x[r] w[e]^T for the rows [offsets[e], offsets[e+1]) of each group;
/// rows outside every group are zero.
void groupedMatmulNT(const MatrixF32 &x, const Tensor3F32 &w,
                     const VectorI64 &offsets, const MatrixF32 &y);

/// c[e] = a[:, group e] b[:, group e]^T: the weight gradient of a grouped
/// linear, with its operands transposed so that groups are column ranges.
void groupedMatmulNTSplitK(const MatrixF32 &a, const MatrixF32 &b,
                           const VectorI64 &offsets, const Tensor3F32 &c);

/// The row range [first, second) of each of `experts` groups delimited by
/// `offsets` ([E+1]). Hand-written offsets cannot index out of bounds or
/// make groups overlap: each group is clamped to [end of the previous
/// group, rows), and groups past the end of `offsets` are empty.
using RowRange = std::pair<int64_t, int64_t>;
std::vector<RowRange> groupRanges(const VectorI64 &offsets, int64_t experts,
                                  int64_t rows);

/// Row tiles of `tileRows` that restart at every group: entry e is group
/// e's first tile, the last entry the number of tiles used. A group that
/// would take the count past `capacity` (the scale rows there are; only
/// hand-written offsets get there) gets no tiles.
std::vector<int64_t> groupTileStarts(const std::vector<RowRange> &groups,
                                     int64_t tileRows, int64_t capacity);

/// dsv3.fp8_quantize with `groups`: tiles [tileRows, tileCols] restarting
/// at each group; scale rows past the last tile are 0.
void quantizeGroupedTiles(const StridedMatrix<float> &x, const VectorI64 &offsets,
                          int64_t tileRows, int64_t tileCols, FP8Format format,
                          ScaleRounding rounding, const MatrixU8 &codes,
                          const StridedMatrix<float> &scales);

/// `codes` as the logical [rows, K] operand of fp8GemmNT (`transposed`:
/// stored [K, rows]), `scales` laid out like the codes with one entry per
/// tile of `scaleRowTile` (1 or 128) rows and 128 K steps.
FP8Operand fp8Operand(const MatrixU8 &codes, const StridedMatrix<float> &scales,
                      bool transposed, int64_t scaleRowTile, FP8Format format);

/// y = A B^T through fp8GemmNT for any strides of y.
void fp8GemmInto(const FP8Operand &a, const FP8Operand &b, int64_t k,
                 const MatrixF32 &y);

/// dsv3.fp8_m_grouped_gemm: y[r] = A[r] B[e]^T for the rows of group e;
/// `b` is [E, N, K] ([E, K, N] transposed) with per-expert 128x128 blocks.
void fp8MGroupedGemm(const MatrixU8 &a, const StridedMatrix<float> &aScales,
                     const StridedTensor3<uint8_t> &b, const Tensor3F32 &bScales,
                     const VectorI64 &offsets, bool transposeB, FP8Format formatA,
                     FP8Format formatB, const MatrixF32 &y);

/// dsv3.fp8_k_grouped_gemm: y[e] = sum over the rows r of group e of
/// A[r]^T B[r], both operands in grouped 128x1 tiles.
void fp8KGroupedGemm(const MatrixU8 &a, const StridedMatrix<float> &aScales,
                     const MatrixU8 &b, const StridedMatrix<float> &bScales,
                     const VectorI64 &offsets, FP8Format formatA,
                     FP8Format formatB, const Tensor3F32 &y);

/// The packed float32 kernel behind matmulNT (AVX-512: B strips packed by
/// 16x16 transposes, 12x32 register tiles of FMAs). Returns false, doing
/// nothing, where it does not apply (non-unit inner strides, tiny shapes,
/// no AVX-512).
bool packedMatmulNT(const MatrixF32 &a, const MatrixF32 &b, const MatrixF32 &c);

/// Symbol table for the JIT: (name, address) pairs, null-terminated.
struct KernelSymbol {
  const char *name;
  void *address;
};
const KernelSymbol *kernelSymbols();

} // namespace dsv3::rt

extern "C" {
void _mlir_ciface_dsv3rt_matmul_nt_f32(dsv3::rt::MatrixF32 *a,
                                       dsv3::rt::MatrixF32 *b,
                                       dsv3::rt::MatrixF32 *c);
/// dsv3.moe_dispatch's ordering (see moeDispatchOrder).
void _mlir_ciface_dsv3rt_moe_dispatch_order(dsv3::rt::MatrixI64 *ids,
                                            int64_t numExperts,
                                            dsv3::rt::MatrixI64 *rowOfSlot,
                                            dsv3::rt::VectorI64 *slotOfRow,
                                            dsv3::rt::VectorI64 *offsets);
/// dsv3.grouped_linear and its input gradient.
void _mlir_ciface_dsv3rt_grouped_matmul_nt_f32(dsv3::rt::MatrixF32 *x,
                                               dsv3::rt::Tensor3F32 *w,
                                               dsv3::rt::VectorI64 *offsets,
                                               dsv3::rt::MatrixF32 *y);
/// dsv3.grouped_linear_grad_weight.
void _mlir_ciface_dsv3rt_grouped_matmul_nt_f32_split_k(
    dsv3::rt::MatrixF32 *a, dsv3::rt::MatrixF32 *b, dsv3::rt::VectorI64 *offsets,
    dsv3::rt::Tensor3F32 *c);
/// dsv3.mla_core: q_nope/k_nope [B,T,H,Dn], q_rope [B,T,H,R], k_rope [B,T,R],
/// v [B,T,H,Dv], segment ids [B,T] (all equal: one document per row).
void _mlir_ciface_dsv3rt_mla_attention(
    dsv3::rt::Tensor4F32 *qNope, dsv3::rt::Tensor4F32 *qRope,
    dsv3::rt::Tensor4F32 *kNope, dsv3::rt::Tensor3F32 *kRope,
    dsv3::rt::Tensor4F32 *v, dsv3::rt::MatrixI64 *segments, double scale,
    dsv3::rt::Tensor4F32 *out);
/// dsv3.mla_absorbed_core: q_nope [B,T,H,Dn], q_rope [B,T,H,R], w_uk
/// [H,Dn,C], w_uv [H,Dv,C], cache [B,S,C+R], rows [B,T,C+R], positions [B,T]
/// (row b's cached prefix is positions[b,0] rows long).
void _mlir_ciface_dsv3rt_mla_absorbed_attention(
    dsv3::rt::Tensor4F32 *qNope, dsv3::rt::Tensor4F32 *qRope, dsv3::rt::Tensor3F32 *wUK,
    dsv3::rt::Tensor3F32 *wUV, dsv3::rt::Tensor3F32 *cache, dsv3::rt::Tensor3F32 *rows,
    dsv3::rt::MatrixI64 *positions, double scale, dsv3::rt::Tensor4F32 *out);
/// The same over a BF16 cache (raw bits), widened to float32 on read.
void _mlir_ciface_dsv3rt_mla_absorbed_attention_bf16(
    dsv3::rt::Tensor4F32 *qNope, dsv3::rt::Tensor4F32 *qRope, dsv3::rt::Tensor3F32 *wUK,
    dsv3::rt::Tensor3F32 *wUV, dsv3::rt::StridedTensor3<uint16_t> *cache,
    dsv3::rt::Tensor3F32 *rows, dsv3::rt::MatrixI64 *positions, double scale,
    dsv3::rt::Tensor4F32 *out);
/// dsv3.mla_core_grad: the same operands and dout; the probabilities are
/// recomputed.
void _mlir_ciface_dsv3rt_mla_attention_grad(
    dsv3::rt::Tensor4F32 *qNope, dsv3::rt::Tensor4F32 *qRope,
    dsv3::rt::Tensor4F32 *kNope, dsv3::rt::Tensor3F32 *kRope,
    dsv3::rt::Tensor4F32 *v, dsv3::rt::MatrixI64 *segments, double scale,
    dsv3::rt::Tensor4F32 *dout, dsv3::rt::Tensor4F32 *dqNope,
    dsv3::rt::Tensor4F32 *dqRope, dsv3::rt::Tensor4F32 *dkNope,
    dsv3::rt::Tensor3F32 *dkRope, dsv3::rt::Tensor4F32 *dv);
/// dsv3.fp8_quantize: x -> codes, scales for tile [tileRows, tileCols].
void _mlir_ciface_dsv3rt_fp8_quantize(dsv3::rt::MatrixF32 *x, int64_t tileRows,
                                      int64_t tileCols, int64_t format,
                                      int64_t powerOfTwo,
                                      dsv3::rt::MatrixU8 *codes,
                                      dsv3::rt::MatrixF32 *scales);
/// dsv3.fp8_quantize of stacked expert matrices [E, R, C], slice by slice.
void _mlir_ciface_dsv3rt_fp8_quantize_stacked(
    dsv3::rt::Tensor3F32 *x, int64_t tileRows, int64_t tileCols, int64_t format,
    int64_t powerOfTwo, dsv3::rt::StridedTensor3<uint8_t> *codes,
    dsv3::rt::Tensor3F32 *scales);
/// dsv3.fp8_quantize with groups (see quantizeGroupedTiles).
void _mlir_ciface_dsv3rt_fp8_quantize_grouped(
    dsv3::rt::MatrixF32 *x, dsv3::rt::VectorI64 *offsets, int64_t tileRows,
    int64_t tileCols, int64_t format, int64_t powerOfTwo,
    dsv3::rt::MatrixU8 *codes, dsv3::rt::MatrixF32 *scales);
/// dsv3.fp8_m_grouped_gemm.
void _mlir_ciface_dsv3rt_fp8_m_grouped_gemm(
    dsv3::rt::MatrixU8 *a, dsv3::rt::MatrixF32 *aScales,
    dsv3::rt::StridedTensor3<uint8_t> *b, dsv3::rt::Tensor3F32 *bScales,
    dsv3::rt::VectorI64 *offsets, int64_t transposeB, int64_t formatA,
    int64_t formatB, dsv3::rt::MatrixF32 *y);
/// dsv3.fp8_k_grouped_gemm.
void _mlir_ciface_dsv3rt_fp8_k_grouped_gemm(
    dsv3::rt::MatrixU8 *a, dsv3::rt::MatrixF32 *aScales, dsv3::rt::MatrixU8 *b,
    dsv3::rt::MatrixF32 *bScales, dsv3::rt::VectorI64 *offsets, int64_t formatA,
    int64_t formatB, dsv3::rt::Tensor3F32 *y);
/// dsv3.fp8_dequantize.
void _mlir_ciface_dsv3rt_fp8_dequantize(dsv3::rt::MatrixU8 *codes,
                                        dsv3::rt::MatrixF32 *scales,
                                        int64_t tileRows, int64_t tileCols,
                                        int64_t format, dsv3::rt::MatrixF32 *out);
/// dsv3.fp8_gemm: y = A B^T, operands as stored (see FP8GemmOp).
void _mlir_ciface_dsv3rt_fp8_gemm(dsv3::rt::MatrixU8 *a, dsv3::rt::MatrixF32 *aScales,
                                  dsv3::rt::MatrixU8 *b, dsv3::rt::MatrixF32 *bScales,
                                  int64_t transposeA, int64_t transposeB,
                                  int64_t formatA, int64_t formatB,
                                  dsv3::rt::MatrixF32 *y);
}

#endif // DSV3_RUNTIME_KERNELS_KERNELS_H
