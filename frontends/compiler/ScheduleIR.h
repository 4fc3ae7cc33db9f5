//===- ScheduleIR.h - pipeline schedules to and from IR ---------*- C++ -*-===//
//
// Part of the compiler library. The runtime's schedule generators
// (runtime/pipeline/Schedule.h) build each rank's program; here it becomes
// a `dsv3.pipeline_schedule` in the module (chunk runs, F&B pairs, and the
// messages between stages), so the passes that follow see it and its
// verifier checks it, and the IR is read back for `dsv3c compile
// --emit=schedule`.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_COMPILER_SCHEDULEIR_H
#define DSV3_FRONTENDS_COMPILER_SCHEDULEIR_H

#include "runtime/pipeline/Schedule.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace dsv3 {

/// Appends `schedule` to `module` as one `dsv3.pipeline_schedule`.
void appendScheduleIR(mlir::ModuleOp module, const rt::PipelineSchedule &schedule);

/// A schedule read back from `module`'s `dsv3.pipeline_schedule`, with the
/// fused function of each F&B pair that has one ("" otherwise), per rank
/// and step.
struct ScheduleFromIR {
  rt::PipelineSchedule schedule;
  std::vector<std::vector<std::string>> fused;
};
llvm::Expected<ScheduleFromIR> readScheduleIR(mlir::ModuleOp module);

} // namespace dsv3

#endif // DSV3_FRONTENDS_COMPILER_SCHEDULEIR_H
