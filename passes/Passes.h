//===- Passes.h - passes on dsv3 IR -----------------------------*- C++ -*-===//
#ifndef DSV3_PASSES_PASSES_H
#define DSV3_PASSES_PASSES_H

#include "ir/DSV3/DSV3Dialect.h"
#include "mlir/Pass/Pass.h"

namespace dsv3 {
#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"
} // namespace dsv3

#endif // DSV3_PASSES_PASSES_H
