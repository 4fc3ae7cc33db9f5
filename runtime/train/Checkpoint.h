//===- Checkpoint.h - training checkpoints, one process or many -*- C++ -*-===//
//
// Part of the runtime core (no LLVM). A checkpoint is a directory in the
// hub layout:
//   config.json
//   model.safetensors                  (one expert-parallel rank), or
//   model-0000k-of-0000n.safetensors   one file per expert-parallel rank,
//   model.safetensors.index.json       file 1 also holding every replicated
//                                      parameter;
//   optimizer.safetensors, or optimizer-0000k-of-0000n.safetensors with
//   optimizer.safetensors.index.json: AdamW's moments per hub tensor
//   ("<name>.exp_avg", "<name>.exp_avg_sq") and, in the metadata, the step
//   and the data seed.
// Every tensor carries its hub name (experts by their index in the whole
// stack), so a checkpoint saved under one parallel plan loads under any
// other, or into one process. The ranks that hold the tensors write them;
// the directory is written beside the target and renamed over it, so a
// crash leaves the previous checkpoint or the new one.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_TRAIN_CHECKPOINT_H
#define DSV3_RUNTIME_TRAIN_CHECKPOINT_H

#include "runtime/exec/Session.h"
#include "runtime/parallel/Parallel.h"

#include <string>
#include <utility>
#include <vector>

namespace dsv3::rt {

/// What a checkpoint records besides the session's state.
struct CheckpointInfo {
  int64_t step = 0;
  uint64_t seed = 0;
  std::string configJson; ///< the hub config.json text
  /// Files written beside the weights, by name (the tokenizer's, so that
  /// one directory goes from training to generation).
  std::vector<std::pair<std::string, std::string>> files;
};

/// Fails when `dir` exists and is not a checkpoint: saving replaces the
/// directory, and must never replace anything else.
Error checkSaveTarget(const std::string &dir);

/// Opens the model and optimizer files of `dir` (a bad checkpoint fails
/// before a long compile).
Error checkResumeSource(const std::string &dir);

/// Writes the session's parameters and moments to `dir`. With a `job` of
/// several ranks every rank must call it: data-parallel rank 0 of each
/// expert-parallel rank writes its file, after gathering the moments its
/// data group's ZeRO-1 slices hold; world rank 0 writes the indices and
/// renames. Every rank returns the same success or failure.
Error saveCheckpoint(const std::string &dir, const CheckpointInfo &info, Session &session,
                     ProcessGroups *job = nullptr);

/// Loads the parameters and this rank's slice of the moments from `dir`
/// (written under any plan) into the session; returns the step it was
/// saved at.
Expected<int64_t> loadCheckpoint(const std::string &dir, Session &session);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_TRAIN_CHECKPOINT_H
