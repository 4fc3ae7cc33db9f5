//===- Optimizer.h - optimizer update as compiled IR ------------*- C++ -*-===//
//
// Builds the AdamW update over the flat parameter buffer as linalg on
// tensors; it goes through the same CPU pipeline and JIT as the model.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_IMPORT_OPTIMIZER_H
#define DSV3_FRONTENDS_IMPORT_OPTIMIZER_H

#include "runtime/abi/Abi.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace dsv3 {

/// `@adamw_step(p, g, m, v : tensor<N>, hyper : tensor<8>) -> (p', m', v')`,
/// the hyper-parameters in the slots of rt::AdamWHyper (runtime/abi/Abi.h),
/// PyTorch's AdamW with decoupled weight decay:
///   g = g * scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
///   p = p (1 - lr wd) - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
/// With `bf16Moments`, m and v are stored as BF16 (as DeepSeek-V3 does) and
/// widened to FP32 for the arithmetic; parameters stay FP32 master weights.
mlir::OwningOpRef<mlir::ModuleOp> buildAdamWModule(mlir::MLIRContext &ctx,
                                                   int64_t numElements,
                                                   bool bf16Moments = false);

} // namespace dsv3

#endif // DSV3_FRONTENDS_IMPORT_OPTIMIZER_H
