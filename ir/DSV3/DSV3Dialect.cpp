//===- DSV3Dialect.cpp - dsv3 dialect registration --------------*- C++ -*-===//
//
// Registers the ops generated from DSV3Ops.td. Verifiers live in
// DSV3Verifiers.cpp.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace dsv3;

#include "ir/DSV3/DSV3OpsDialect.cpp.inc"

void DSV3Dialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ir/DSV3/DSV3Ops.cpp.inc"
      >();
}

#define GET_OP_CLASSES
#include "ir/DSV3/DSV3Ops.cpp.inc"
