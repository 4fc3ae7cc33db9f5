//===- Rules.h - gradient rules as DifferentiableOpInterface models -*- C++ -*-===//
//
// Attaches the reverse-mode rules of the dsv3 ops and of the arith/tensor
// ops the decomposition produces (the dsv3-autodiff pass registers them).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_PASSES_AUTODIFF_RULES_H
#define DSV3_PASSES_AUTODIFF_RULES_H

#include "ir/DSV3/DSV3Dialect.h"
#include "ir/DSV3/GradientSweep.h"

#include "mlir/IR/DialectRegistry.h"

namespace dsv3 {

void registerGradientRules(mlir::DialectRegistry &registry);

/// The rules of the communication ops (CommRules.cpp); part of
/// registerGradientRules.
void registerCommGradientRules(mlir::DialectRegistry &registry);

/// The DifferentiableOpInterface model of an op whose rule is `Fn`.
template <typename OpT, mlir::LogicalResult (*Fn)(OpT, mlir::OpBuilder &, GradientSweep &)>
struct Rule : DifferentiableOpInterface::ExternalModel<Rule<OpT, Fn>, OpT> {
  mlir::LogicalResult emitGradient(mlir::Operation *op, mlir::OpBuilder &b,
                                   GradientSweep &sweep) const {
    return Fn(mlir::cast<OpT>(op), b, sweep);
  }
};

} // namespace dsv3

#endif // DSV3_PASSES_AUTODIFF_RULES_H
