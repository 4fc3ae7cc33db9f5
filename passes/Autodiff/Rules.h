//===- Rules.h - gradient rules as DifferentiableOpInterface models -*- C++ -*-===//
//
// Attaches the reverse-mode rules of the dsv3 ops and of the arith/tensor
// ops the decomposition produces (the dsv3-autodiff pass registers them).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_PASSES_AUTODIFF_RULES_H
#define DSV3_PASSES_AUTODIFF_RULES_H

#include "mlir/IR/DialectRegistry.h"

namespace dsv3 {

void registerGradientRules(mlir::DialectRegistry &registry);

} // namespace dsv3

#endif // DSV3_PASSES_AUTODIFF_RULES_H
