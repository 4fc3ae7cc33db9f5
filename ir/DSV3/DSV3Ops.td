//===- DSV3Ops.td - all dsv3 ops -------------------------*- tablegen -*-===//
//
// Aggregates the op files; add_mlir_doc and the op tablegen run on this file.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3OPS_TD
#define DSV3_IR_DSV3OPS_TD

include "ir/DSV3/DSV3Base.td"
include "ir/DSV3/DSV3Attrs.td"
include "ir/DSV3/DSV3ModelOps.td"
include "ir/DSV3/DSV3TensorOps.td"
include "ir/DSV3/DSV3GradOps.td"
include "ir/DSV3/DSV3FP8Ops.td"
include "ir/DSV3/DSV3CommOps.td"
include "ir/DSV3/DSV3PipelineOps.td"

#endif // DSV3_IR_DSV3OPS_TD
