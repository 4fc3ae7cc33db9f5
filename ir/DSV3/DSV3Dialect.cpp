//===- DSV3Dialect.cpp - dsv3 dialect registration --------------*- C++ -*-===//
//
// Registers the ops and attributes generated from DSV3Ops.td. Verifiers live in
// DSV3Verifiers.cpp.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace dsv3;

#include "ir/DSV3/DSV3OpsDialect.cpp.inc"
#include "ir/DSV3/DSV3Enums.cpp.inc"
#include "ir/DSV3/DSV3Interfaces.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "ir/DSV3/DSV3Attrs.cpp.inc"

void DSV3Dialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ir/DSV3/DSV3Ops.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ir/DSV3/DSV3Attrs.cpp.inc"
      >();
}

#define GET_OP_CLASSES
#include "ir/DSV3/DSV3Ops.cpp.inc"
