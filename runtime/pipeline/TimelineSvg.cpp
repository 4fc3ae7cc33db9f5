//===- TimelineSvg.cpp - a pipeline timeline as an SVG picture ------------===//
//
// Part of runtime/pipeline: draws one row per rank and one box per step
// (coloured by pass, fused F&B pairs apart) for the executed run (`grad
// --pp --svg`) and the simulator's replay (`dsv3c schedule --svg`).
//
//===----------------------------------------------------------------------===//
#include "runtime/pipeline/TimelineSvg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace dsv3::rt {

namespace {

const char *fillOf(const ScheduleStep &step) {
  if (step.overlappedBackward)
    return "#b59ad6";
  switch (step.chunk.pass) {
  case ChunkPass::Forward:
    return "#7fa7d9";
  case ChunkPass::Backward:
    return "#7cc48a";
  case ChunkPass::BackwardInput:
    return "#b8e0a8";
  case ChunkPass::BackwardWeight:
    return "#f0d77a";
  }
  return "#cccccc";
}

std::string escape(const std::string &text) {
  std::string out;
  for (char c : text) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else
      out += c;
  }
  return out;
}

/// A tick step of 1, 2 or 5 times a power of ten giving about `ticks` ticks.
double tickStep(double span, int ticks) {
  double raw = span / std::max(ticks, 1);
  double power = std::pow(10.0, std::floor(std::log10(raw > 0 ? raw : 1)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * power >= raw)
      return m * power;
  return 10 * power;
}

} // namespace

std::string timelineSvg(const PipelineSchedule &schedule, const StepSpans &spans,
                        const std::string &title, const std::string &unit) {
  const double left = 60, right = 20, top = 40, rowHeight = 34;
  double end = 0, shortest = 0;
  for (const auto &rank : spans)
    for (const auto &[a, b] : rank) {
      end = std::max(end, b);
      if (b > a && (shortest == 0 || b - a < shortest))
        shortest = b - a;
    }
  if (end <= 0)
    end = 1;
  // 1000 px wide, or wider (up to 4000) until the shortest step is wide
  // enough for a three-character label.
  double scale = (1000 - left - right) / end;
  if (shortest > 0)
    scale = std::min(std::max(scale, 26 / shortest), (4000 - left - right) / end);
  double width = left + right + end * scale;
  double height = top + rowHeight * schedule.ranks + 40;
  char buf[512];
  std::string svg;
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "font-family=\"sans-serif\" font-size=\"11\">\n"
                "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
                "<text x=\"%.0f\" y=\"20\" font-size=\"14\">%s</text>\n",
                width, height, left, escape(title).c_str());
  svg += buf;
  for (int r = 0; r < schedule.ranks && r < static_cast<int>(spans.size()); ++r) {
    double y = top + r * rowHeight;
    std::snprintf(buf, sizeof buf,
                  "<text x=\"8\" y=\"%.1f\">rank %d</text>\n"
                  "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                  y + rowHeight / 2 + 4, r, left, y + rowHeight - 2, width - right,
                  y + rowHeight - 2);
    svg += buf;
    const std::vector<ScheduleStep> &steps = schedule.steps[r];
    for (size_t i = 0; i < steps.size() && i < spans[r].size(); ++i) {
      auto [a, b] = spans[r][i];
      double x = left + a * scale, w = std::max((b - a) * scale, 0.5);
      std::string label = stepLabel(schedule, r, steps[i]);
      std::snprintf(buf, sizeof buf,
                    "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\" "
                    "stroke=\"#333\" stroke-width=\"0.5\"><title>%s: %.3f-%.3f %s</title></rect>\n",
                    x, y + 2, w, rowHeight - 6, fillOf(steps[i]), escape(label).c_str(), a, b,
                    escape(unit).c_str());
      svg += buf;
      // Labels only where they fit (about 6 px a character).
      if (w >= 6.0 * label.size() + 4) {
        std::snprintf(buf, sizeof buf,
                      "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x + w / 2,
                      y + rowHeight / 2 + 3, escape(label).c_str());
        svg += buf;
      }
    }
  }
  double axisY = top + rowHeight * schedule.ranks + 8;
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#333\"/>\n", left,
                axisY, width - right, axisY);
  svg += buf;
  double step = tickStep(end, 10);
  for (double t = 0; t <= end + 1e-9; t += step) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#333\"/>\n"
                  "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                  left + t * scale, axisY, left + t * scale, axisY + 4, left + t * scale,
                  axisY + 16, t);
    svg += buf;
  }
  std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                width - right, axisY + 30, escape(unit).c_str());
  svg += buf;
  svg += "</svg>\n";
  return svg;
}

} // namespace dsv3::rt
