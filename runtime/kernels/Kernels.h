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

extern "C" void _mlir_ciface_dsv3rt_matmul_nt_f32(dsv3::rt::MatrixF32 *a,
                                                  dsv3::rt::MatrixF32 *b,
                                                  dsv3::rt::MatrixF32 *c);

#endif // DSV3_RUNTIME_KERNELS_KERNELS_H
