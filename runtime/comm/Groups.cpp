//===- Groups.cpp - the communicators of this process, by group -----------===//
#include "runtime/comm/Groups.h"

#include <array>

namespace dsv3::rt {

namespace {

std::array<Communicator *, kNumCommGroups> &registry() {
  static std::array<Communicator *, kNumCommGroups> groups{};
  return groups;
}

} // namespace

const char *commGroupName(CommGroup group) {
  switch (group) {
  case CommGroup::World:
    return "world";
  case CommGroup::Data:
    return "data";
  case CommGroup::Expert:
    return "expert";
  case CommGroup::Pipeline:
    return "pipeline";
  }
  return "?";
}

std::optional<CommGroup> parseCommGroup(const std::string &name) {
  for (int64_t g = 0; g < kNumCommGroups; ++g)
    if (name == commGroupName(static_cast<CommGroup>(g)))
      return static_cast<CommGroup>(g);
  return std::nullopt;
}

void setProcessGroup(CommGroup group, Communicator *comm) {
  registry()[static_cast<size_t>(group)] = comm;
}

Communicator &processGroup(CommGroup group) {
  static std::unique_ptr<Communicator> alone = singleProcessCommunicator();
  Communicator *c = registry()[static_cast<size_t>(group)];
  return c ? *c : *alone;
}

} // namespace dsv3::rt
