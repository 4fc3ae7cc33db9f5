//===- Manifest.h - the ABI of a compiled module as JSON --------*- C++ -*-===//
//
// What a runtime needs to call a compiled module it did not compile: the
// parameter layout and the entry points. The compile cache stores one next
// to each object; ahead-of-time artifacts carry one beside their shared
// object. `extra` is the producer's own data (e.g. the mode and recipe of
// an artifact), kept as JSON text.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_ABI_MANIFEST_H
#define DSV3_RUNTIME_ABI_MANIFEST_H

#include "runtime/abi/Abi.h"
#include "runtime/support/Error.h"

#include <string>
#include <vector>

namespace dsv3::rt {

struct Manifest {
  ParamLayout layout;
  std::vector<EntryPoint> entries;
  std::string extraJson = "null";
};

/// The manifest as one JSON object: {"param_count", "params": [{"name",
/// "offset", "shape", "role"}], "entries": [{"name", "inputs": [{"name",
/// "type", "shape"}], "outputs": [{"name", "role", "param"?, "type",
/// "shape"}]}], "extra"}.
std::string writeManifest(const Manifest &manifest);

/// Parses and validates a manifest; errors name `path`.
Expected<Manifest> parseManifest(const std::string &text, const std::string &path);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_ABI_MANIFEST_H
