//===- Outputs.cpp - an entry point's outputs as a safetensors file -------===//
#include "runtime/io/Outputs.h"

#include "runtime/io/Parameters.h"
#include "runtime/io/Safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace dsv3::rt {

Error writeOutputs(const EntryPoint &entry, OutputBuffers &buffers, const std::string &path,
                   const std::string &producer, std::string &summary) {
  SafetensorsWriter writer;
  for (size_t i = 0; i < entry.outputs.size() && i < buffers.tensors.size(); ++i) {
    const std::string &name = entry.outputs[i].name;
    HostTensor &t = buffers.tensors[i];
    std::vector<int64_t> shape = t.shape;
    if (shape.empty())
      shape = {1}; // scalars are stored as [1], like the reference files
    int64_t n = t.numElements();
    if (t.type == ElementType::I64) {
      int64_t *ids = t.i64();
      int64_t k = shape.back();
      for (int64_t r = 0; k > 0 && r < n; r += k)
        std::sort(ids + r, ids + r + k);
      writer.addI64(name, shape, ids, n);
    } else if (t.type == ElementType::BF16) {
      writer.addTensor(name, DType::BF16, shape, t.bytes);
    } else if (name.find('*') != std::string::npos) {
      addSplitTensor(writer, name, shape, t.f32());
    } else {
      writer.addF32(name, shape, t.f32(), n);
    }
    if (t.shape.empty() && t.type == ElementType::F32) {
      float v = t.f32()[0];
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
