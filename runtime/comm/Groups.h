//===- Groups.h - the communicators of this process, by group ---*- C++ -*-===//
//
// Compiled code names a group of ranks (`group = "expert"` on a dsv3
// communication op), not a communicator: the program that runs it (dsv3c,
// dsv3-run) splits the world by its parallel plan and registers the groups
// here before calling compiled code, which reaches them through the C entry
// points of CommKernels.h. Without registration every group is a
// one-process communicator, so code compiled without a plan runs unchanged.
// Part of the runtime core: no LLVM.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_COMM_GROUPS_H
#define DSV3_RUNTIME_COMM_GROUPS_H

#include "runtime/comm/Communicator.h"

#include <cstdint>
#include <optional>
#include <string>

namespace dsv3::rt {

/// The groups of ranks compiled code can address; the numbers are what
/// the lowering passes to the entry points (lowering/Comm keeps the same
/// list).
enum class CommGroup : int64_t { World = 0, Data = 1, Expert = 2, Pipeline = 3 };
constexpr int64_t kNumCommGroups = 4;
const char *commGroupName(CommGroup group);
std::optional<CommGroup> parseCommGroup(const std::string &name);

/// Registers `comm` (borrowed; it must outlive every call of compiled code)
/// as `group`; nullptr restores the one-process default.
void setProcessGroup(CommGroup group, Communicator *comm);
/// The communicator registered for `group`, or the one-process one.
Communicator &processGroup(CommGroup group);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_COMM_GROUPS_H
