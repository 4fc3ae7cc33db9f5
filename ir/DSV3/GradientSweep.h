//===- GradientSweep.h - what a gradient rule sees of the sweep -*- C++ -*-===//
//
// The state a DifferentiableOpInterface rule reads and writes during a
// reverse sweep: the gradient of a value and the accumulation of operand
// gradients. Declared with the dialect so the interface can name it; the
// sweep itself lives in the autodiff pass.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_GRADIENTSWEEP_H
#define DSV3_IR_GRADIENTSWEEP_H

#include "mlir/IR/Location.h"
#include "mlir/IR/Value.h"

namespace dsv3 {

class GradientSweep {
public:
  virtual ~GradientSweep() = default;
  /// The gradient of `v` so far, or null when `v` does not reach the
  /// objective.
  virtual mlir::Value gradient(mlir::Value v) const = 0;
  /// Adds `g` to the gradient of `v` (float tensors only; others ignore it).
  virtual void accumulate(mlir::Value v, mlir::Value g) = 0;
  /// A zero tensor of `type`.
  virtual mlir::Value zeros(mlir::Location loc, mlir::Type type) = 0;
};

} // namespace dsv3

#endif // DSV3_IR_GRADIENTSWEEP_H
