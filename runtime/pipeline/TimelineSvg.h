//===- TimelineSvg.h - a pipeline timeline as an SVG picture ----*- C++ -*-===//
//
// Part of the runtime core (no LLVM). Draws one row per pipeline rank and
// one box per step of its program, placed at the step's start and end
// (measured by the executor, or simulated), labelled and coloured as the
// schedule tables name steps: F blue, B green, Bi light green, W yellow,
// an F&B pair purple. `dsv3c grad --pp P --svg FILE` draws the executed
// schedule, `dsv3c schedule --svg FILE` the simulated one.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_PIPELINE_TIMELINESVG_H
#define DSV3_RUNTIME_PIPELINE_TIMELINESVG_H

#include "runtime/pipeline/Schedule.h"

#include <string>
#include <utility>
#include <vector>

namespace dsv3::rt {

/// Start and end of each step of each rank from a common origin, in the
/// unit the axis names (milliseconds measured, or the simulator's costs).
using StepSpans = std::vector<std::vector<std::pair<double, double>>>;

/// The SVG document: `title` on top, rank rows, a time axis labelled with
/// `unit` ("ms", "cost units").
std::string timelineSvg(const PipelineSchedule &schedule, const StepSpans &spans,
                        const std::string &title, const std::string &unit);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_PIPELINE_TIMELINESVG_H
