//===- Kernels.h - C ABI of the runtime microkernels ------------*- C++ -*-===//
//
// Entry points that JIT-compiled code calls (through the MLIR C interface:
// each memref argument arrives as a pointer to its strided descriptor) and
// that benchmarks and tests call directly.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_KERNELS_KERNELS_H
#define DSV3_RUNTIME_KERNELS_KERNELS_H

#include <cstdint>

namespace dsv3::rt {

/// Layout-compatible with MLIR's StridedMemRefType<float, 2>.
struct MatrixF32 {
  float *allocated;
  float *data;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
};

/// Layout-compatible with MLIR's StridedMemRefType<T, 2> for any element.
template <class T> struct StridedMatrix {
  T *allocated;
  T *data;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
  T *at(int64_t r, int64_t c) const {
    return data + offset + r * strides[0] + c * strides[1];
  }
};
using MatrixU8 = StridedMatrix<uint8_t>; // FP8 codes (f8E4M3FN / f8E5M2)

/// C[m,n] += sum_k A[m,k] * B[n,k] for A [M,K], B [N,K], C [M,N]. Blocked
/// for registers, vectorised, and split over cores with TBB when large.
void matmulNT(const MatrixF32 &a, const MatrixF32 &b, const MatrixF32 &c);

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
/// dsv3.fp8_quantize: x -> codes, scales for tile [tileRows, tileCols].
void _mlir_ciface_dsv3rt_fp8_quantize(dsv3::rt::MatrixF32 *x, int64_t tileRows,
                                      int64_t tileCols, int64_t format,
                                      int64_t powerOfTwo,
                                      dsv3::rt::MatrixU8 *codes,
                                      dsv3::rt::MatrixF32 *scales);
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
