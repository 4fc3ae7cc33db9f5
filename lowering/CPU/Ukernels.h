//===- Ukernels.h - CPU microkernel selection helpers -----------*- C++ -*-===//
//
// Shared by the CPU passes: the structural match of a float32 GEMM that the
// runtime's packed kernel computes, and the bufferization model of
// dsv3_codegen.ukernel. Private to lowering/.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_LOWERING_CPU_UKERNELS_H
#define DSV3_LOWERING_CPU_UKERNELS_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/DialectRegistry.h"

namespace dsv3::lowering {

/// `C[m,n] += A[m,k] * B[n,k]` on float32, whatever produced it: two inputs
/// and one init, maps (m,k), (n,k) -> (m,n), loops parallel, parallel,
/// reduction, and a body that is exactly `yield c + a * b`.
bool isMatmulNTF32(mlir::linalg::LinalgOp op);

/// One-shot bufferization of dsv3_codegen.ukernel (destination-passing
/// style; kernels overwrite their outputs entirely).
void registerUkernelBufferization(mlir::DialectRegistry &registry);

} // namespace dsv3::lowering

#endif // DSV3_LOWERING_CPU_UKERNELS_H
