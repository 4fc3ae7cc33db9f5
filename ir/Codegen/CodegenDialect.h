//===- CodegenDialect.h - dsv3_codegen dialect and ops ----------*- C++ -*-===//
//
// The single header to include for the dsv3_codegen dialect (target kernel
// calls). Independent of the dsv3 dialect.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_CODEGEN_CODEGENDIALECT_H
#define DSV3_IR_CODEGEN_CODEGENDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/DestinationStyleOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "ir/Codegen/CodegenDialect.h.inc"

#define GET_OP_CLASSES
#include "ir/Codegen/CodegenOps.h.inc"

#endif // DSV3_IR_CODEGEN_CODEGENDIALECT_H
