//===- DSV3Dialect.h - dsv3 dialect and op declarations ---------*- C++ -*-===//
//
// The single header to include for the dsv3 dialect and its ops.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3DIALECT_H
#define DSV3_IR_DSV3DIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "ir/DSV3/GradientSweep.h"

#include "ir/DSV3/DSV3OpsDialect.h.inc"
#include "ir/DSV3/DSV3Interfaces.h.inc"
#include "ir/DSV3/DSV3Enums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "ir/DSV3/DSV3Attrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "ir/DSV3/DSV3Types.h.inc"

#define GET_OP_CLASSES
#include "ir/DSV3/DSV3Ops.h.inc"

namespace dsv3 {
/// Names argument `index` of `fn` (the name the runtime's ABI gives it).
void setInput(mlir::FunctionOpInterface fn, unsigned index, llvm::StringRef name);

/// Names result `index` of `fn` and states its role (and, for gradients and
/// expert choices, the parameter it belongs to) as verified attributes.
void setOutput(mlir::FunctionOpInterface fn, unsigned index, llvm::StringRef name,
               OutputRole role, llvm::StringRef param = {});

/// A ranked tensor of floats: what gradients flow through (ids, indices and
/// masks carry none).
bool isFloatTensor(mlir::Value v);
} // namespace dsv3

#endif // DSV3_IR_DSV3DIALECT_H
