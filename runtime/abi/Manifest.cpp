//===- Manifest.cpp - the ABI of a compiled module as JSON ----------------===//
#include "runtime/abi/Manifest.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace dsv3::rt {

using nlohmann::json;

std::string writeManifest(const Manifest &m) {
  json params = json::array(), entries = json::array();
  for (const ParamSlot &s : m.layout.slots) {
    json slot = {{"name", s.name}, {"offset", s.offset}, {"shape", s.shape}, {"role", s.role}};
    if (!s.shard.empty())
      slot["shard"] = s.shard;
    params.push_back(slot);
  }
  for (const EntryPoint &e : m.entries) {
    json inputs = json::array(), outputs = json::array();
    for (const InputSlot &i : e.inputs)
      inputs.push_back(
          {{"name", i.name}, {"type", elementTypeName(i.type)}, {"shape", i.shape}});
    for (const OutputSlot &o : e.outputs) {
      json slot = {{"name", o.name}, {"role", o.role}};
      if (!o.param.empty())
        slot["param"] = o.param;
      slot["type"] = elementTypeName(o.type);
      slot["shape"] = o.shape;
      outputs.push_back(std::move(slot));
    }
    entries.push_back(
        {{"name", e.name}, {"inputs", std::move(inputs)}, {"outputs", std::move(outputs)}});
  }
  json extra = json::parse(m.extraJson, nullptr, /*allow_exceptions=*/false);
  json root = {{"param_count", m.layout.totalElements},
               {"params", std::move(params)},
               {"entries", std::move(entries)},
               {"extra", extra.is_discarded() ? json() : std::move(extra)}};
  return root.dump();
}

namespace {

/// Reads `slot`'s "type" and "shape" (non-negative dimensions whose
/// product fits in int64); false when either is missing or invalid.
bool parseTypeAndShape(const json &slot, ElementType &type, std::vector<int64_t> &shape) {
  auto t = slot.find("type");
  auto s = slot.find("shape");
  if (t == slot.end() || !t->is_string() || !parseElementType(t->get<std::string>(), type) ||
      s == slot.end() || !s->is_array())
    return false;
  int64_t elements = 1;
  for (const json &d : *s) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0 ||
        __builtin_mul_overflow(elements, d.get<int64_t>(), &elements))
      return false;
    shape.push_back(d.get<int64_t>());
  }
  return true;
}

} // namespace

Expected<Manifest> parseManifest(const std::string &text, const std::string &path) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object())
    return fileError(path, "not a JSON object");
  auto bad = [&](const std::string &what) { return fileError(path, "manifest: " + what); };
  const json *count = root.contains("param_count") ? &root["param_count"] : nullptr;
  if (!count || !count->is_number_integer() || count->get<int64_t>() < 0)
    return bad("no valid 'param_count'");
  if (!root.contains("params") || !root["params"].is_array())
    return bad("no 'params' array");
  if (!root.contains("entries") || !root["entries"].is_array())
    return bad("no 'entries' array");
  Manifest m;
  m.layout.totalElements = count->get<int64_t>();
  for (const json &p : root["params"]) {
    if (!p.is_object() || !p.contains("name") || !p["name"].is_string() ||
        !p.contains("offset") || !p["offset"].is_number_integer() ||
        !p.contains("shape") || !p["shape"].is_array())
      return bad("a parameter without name, offset or shape");
    ParamSlot slot;
    slot.name = p["name"].get<std::string>();
    slot.offset = p["offset"].get<int64_t>();
    // The role decides initialisation and training (a routing bias is not
    // trained by gradient): it must be present and known.
    if (!p.contains("role") || !p["role"].is_string())
      return bad("parameter '" + slot.name + "' has no role");
    slot.role = p["role"].get<std::string>();
    const auto &roles = paramRoles();
    if (std::find(roles.begin(), roles.end(), slot.role) == roles.end())
      return bad("parameter '" + slot.name + "' has an unknown role '" + slot.role + "'");
    if (p.contains("shard")) {
      if (!p["shard"].is_string() || p["shard"].get<std::string>() != "expert" ||
          slot.name.find('*') == std::string::npos)
        return bad("parameter '" + slot.name + "' has an invalid 'shard'");
      slot.shard = "expert";
    }
    int64_t elements = 1;
    for (const json &d : p["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 ||
          __builtin_mul_overflow(elements, d.get<int64_t>(), &elements))
        return bad("parameter '" + slot.name + "' has an invalid shape");
      slot.shape.push_back(d.get<int64_t>());
    }
    // A stacked slot ("...experts.*....") splits along a non-empty leading
    // dimension.
    if (slot.name.find('*') != std::string::npos && (slot.shape.empty() || slot.shape[0] <= 0))
      return bad("stacked parameter '" + slot.name + "' has no leading experts dimension");
    int64_t end;
    if (slot.offset < 0 || __builtin_add_overflow(slot.offset, elements, &end) ||
        end > m.layout.totalElements)
      return bad("parameter '" + slot.name + "' lies outside the parameter buffer");
    m.layout.slots.push_back(std::move(slot));
  }
  for (const json &e : root["entries"]) {
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string() ||
        !e.contains("inputs") || !e["inputs"].is_array() || !e.contains("outputs") ||
        !e["outputs"].is_array())
      return bad("an entry point without name, inputs or outputs");
    EntryPoint entry;
    entry.name = e["name"].get<std::string>();
    for (const json &i : e["inputs"]) {
      InputSlot slot;
      if (!i.is_object() || !i.contains("name") || !i["name"].is_string() ||
          !parseTypeAndShape(i, slot.type, slot.shape))
        return bad("entry point '" + entry.name +
                   "' has an input without a name, a known type (f32, bf16, i64) and a shape");
      slot.name = i["name"].get<std::string>();
      entry.inputs.push_back(std::move(slot));
    }
    for (const json &o : e["outputs"]) {
      auto text = [&](const char *key) -> const json * {
        auto it = o.find(key);
        return it != o.end() && it->is_string() ? &*it : nullptr;
      };
      if (!o.is_object() || !text("name") || !text("role") ||
          (o.contains("param") && !text("param")))
        return bad("entry point '" + entry.name +
                   "' has an output without a name and a role");
      OutputSlot slot{(*text("name")).get<std::string>(), (*text("role")).get<std::string>(),
                      text("param") ? (*text("param")).get<std::string>() : ""};
      if (!parseTypeAndShape(o, slot.type, slot.shape))
        return bad("output '" + slot.name +
                   "' has no known type (f32, bf16, i64) and valid shape");
      // Integer results are expert choices, or values a pipeline chunk
      // saves for a later one (routing indices and counts).
      bool integer = slot.type == ElementType::I64;
      if ((slot.role == "expert_ids" && !integer) ||
          (integer && slot.role != "expert_ids" && slot.role != "saved"))
        return bad("output '" + slot.name + "' of role " + slot.role + " cannot be " +
                   elementTypeName(slot.type));
      const auto &roles = outputRoles();
      if (std::find(roles.begin(), roles.end(), slot.role) == roles.end())
        return bad("output '" + slot.name + "' has the unknown role '" + slot.role + "'");
      if (!slot.param.empty() && !m.layout.find(slot.param))
        return bad("output '" + slot.name + "' names the unknown parameter '" + slot.param + "'");
      entry.outputs.push_back(std::move(slot));
    }
    m.entries.push_back(std::move(entry));
  }
  if (root.contains("extra"))
    m.extraJson = root["extra"].dump();
  return m;
}

} // namespace dsv3::rt
