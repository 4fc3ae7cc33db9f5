//===- FP8.cpp - reference lowering of the FP8 ops ------------------------===//
//
// Part of convert-dsv3-to-linalg. The FP8 ops have no reference lowering
// yet: without the CPU kernels (dsv3-cpu-select-ukernels) they are reported
// by the conversion as ops without a lowering.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "lowering/DSV3ToLinalg/LinalgBuilder.h"

using namespace mlir;

void dsv3::lowering::populateFP8LoweringPatterns(RewritePatternSet &) {}
