//===- Outputs.cpp - an entry point's outputs as a safetensors file -------===//
#include "runtime/io/Outputs.h"

#include "runtime/io/Parameters.h"
#include "runtime/io/Safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace dsv3::rt {

Error writeOutputs(const EntryPoint &entry, const std::vector<std::vector<int64_t>> &shapes,
                   OutputBuffers &buffers, const std::string &path, const std::string &producer,
                   std::string &summary) {
  SafetensorsWriter writer;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::string &name = entry.outputs[i].name;
    std::vector<int64_t> shape = shapes[i];
    if (shape.empty())
      shape = {1}; // scalars are stored as [1], like the reference files
    if (name.find('*') != std::string::npos) {
      addSplitTensor(writer, name, shape, buffers.floats[i].data());
    } else if (entry.outputType(i) == ElementType::I64) {
      std::vector<int64_t> &ids = buffers.ints[i];
      int64_t k = shape.back();
      for (size_t r = 0; k > 0 && r < ids.size(); r += k)
        std::sort(ids.begin() + r, ids.begin() + r + k);
      writer.addI64(name, shape, ids);
    } else {
      writer.addF32(name, shape, buffers.floats[i]);
    }
    if (shapes[i].empty()) {
      float v = buffers.floats[i][0];
      char line[128];
      std::snprintf(line, sizeof line, "%-9s %.6f", name.c_str(), v);
      summary += line;
      if (name == "loss") {
        std::snprintf(line, sizeof line, "  (perplexity %.3f)", std::exp(v));
        summary += line;
      }
      summary += "\n";
    }
  }
  writer.setMetadata("producer", producer);
  return writer.write(path);
}

} // namespace dsv3::rt
