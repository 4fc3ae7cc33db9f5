//===- Checkpoint.cpp - training checkpoints, one process or many ---------===//
#include "runtime/train/Checkpoint.h"

#include "runtime/io/Parameters.h"
#include "runtime/io/Safetensors.h"
#include "runtime/support/File.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace dsv3::rt {
namespace {

namespace fs = std::filesystem;

/// The safetensors dtype of moments stored as `type`.
DType momentDType(ElementType type) {
  return type == ElementType::BF16 ? DType::BF16 : DType::F32;
}

/// `stem`.safetensors for one file, else stem-0000k-of-0000n.safetensors
/// (k = index + 1), as the hub names shards.
std::string shardFileName(const std::string &stem, int64_t index, int64_t files) {
  if (files == 1)
    return stem + ".safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05lld-of-%05lld.safetensors", (long long)index + 1,
                (long long)files);
  return stem + buf;
}

/// The flat moments of the whole layout on this rank: its own when the
/// session keeps all of them, else its data group's ZeRO-1 slices gathered.
Error gatherMoments(Session &session, ProcessGroups *job, std::vector<uint8_t> &m,
                    std::vector<uint8_t> &v) {
  const OptimizerShard &shard = session.shard();
  MomentState &mv = session.moments();
  int64_t total = static_cast<int64_t>(session.parameters().size());
  size_t es = mv.elementSize();
  for (auto [from, to] : {std::pair{&mv.m, &m}, std::pair{&mv.v, &v}}) {
    if (shard.count == 1) {
      to->assign(from->begin(), from->begin() + total * es);
      continue;
    }
    if (!job)
      return Error::failure("optimizer state in " + std::to_string(shard.count) +
                            " shards without a job to gather them");
    std::vector<uint8_t> all(shard.count * shard.size(total) * es);
    if (Error e = Communicator::complete(
            job->data().allGather(mv.type, from->data(), all.data(), shard.size(total))))
      return e;
    all.resize(total * es);
    to->swap(all);
  }
  return Error::success();
}

/// Whether expert-parallel rank `e`'s file holds `slot`: its expert
/// blocks, and on rank 0 every replicated parameter.
bool inRankFile(const ParamSlot &slot, int64_t e) { return !slot.shard.empty() || e == 0; }

/// Writes expert-parallel rank `e`'s files: its expert blocks and, on
/// rank 0, every replicated parameter, with their moments.
Error writeRankFiles(const std::string &tmp, const CheckpointInfo &info, Session &session,
                     int64_t e, int64_t files, const std::vector<uint8_t> &m,
                     const std::vector<uint8_t> &v) {
  const std::vector<float> &params = session.parameters();
  DType dtype = momentDType(session.moments().type);
  size_t es = session.moments().elementSize();
  SafetensorsWriter model, opt;
  for (const ParamSlot &slot : session.layout().slots) {
    if (!inRankFile(slot, e))
      continue;
    for (const SlotTensor &t : slotTensors(slot)) {
      model.addF32(t.name, t.shape, params.data() + t.offset, t.count);
      opt.addTensor(t.name + ".exp_avg", dtype, t.shape, m.data() + t.offset * es, t.count * es);
      opt.addTensor(t.name + ".exp_avg_sq", dtype, t.shape, v.data() + t.offset * es,
                    t.count * es);
    }
  }
  model.setMetadata("format", "pt");
  opt.setMetadata("step", std::to_string(info.step));
  opt.setMetadata("seed", std::to_string(info.seed));
  if (Error err = model.write(tmp + "/" + shardFileName("model", e, files)))
    return err;
  return opt.write(tmp + "/" + shardFileName("optimizer", e, files));
}

/// The hub index of a sharded checkpoint: which file holds each tensor.
Error writeIndices(const std::string &tmp, const CheckpointInfo &info, const ParamLayout &placed,
                   size_t es, int64_t files) {
  nlohmann::json modelMap = nlohmann::json::object(), optMap = nlohmann::json::object();
  int64_t modelBytes = 0, optBytes = 0;
  for (int64_t e = 0; e < files; ++e) {
    ParamLayout layout = placed;
    placeShards(layout, e);
    for (const ParamSlot &slot : layout.slots) {
      if (!inRankFile(slot, e))
        continue;
      for (const SlotTensor &t : slotTensors(slot)) {
        modelMap[t.name] = shardFileName("model", e, files);
        optMap[t.name + ".exp_avg"] = optMap[t.name + ".exp_avg_sq"] =
            shardFileName("optimizer", e, files);
        modelBytes += t.count * sizeof(float);
        optBytes += 2 * t.count * es;
      }
    }
  }
  nlohmann::json model = {{"metadata", {{"total_size", modelBytes}}}, {"weight_map", modelMap}};
  nlohmann::json opt = {{"metadata",
                         {{"total_size", optBytes},
                          {"step", std::to_string(info.step)},
                          {"seed", std::to_string(info.seed)}}},
                        {"weight_map", optMap}};
  for (auto [name, index] : {std::pair<const char *, nlohmann::json *>{"model", &model},
                             {"optimizer", &opt}}) {
    std::string text = index->dump(2) + "\n";
    if (Error e = writeFileDurably(tmp + "/" + name + ".safetensors.index.json", text.data(),
                                   text.size()))
      return e;
  }
  return Error::success();
}

/// Puts the written directory in place of `dir`.
Error replaceDirectory(const std::string &tmp, const std::string &dir) {
  std::error_code ec;
  std::string old = dir + ".old-" + std::to_string(::getpid());
  bool hadOld = fs::exists(dir, ec);
  if (hadOld)
    if (fs::rename(dir, old, ec); ec)
      return fileError(dir, ec.message());
  if (fs::rename(tmp, dir, ec); ec)
    return fileError(dir, ec.message());
  if (hadOld)
    fs::remove_all(old, ec);
  return Error::success();
}

/// The optimizer file or index of `dir`.
std::string optimizerLocation(const std::string &dir) {
  std::string index = dir + "/optimizer.safetensors.index.json";
  std::error_code ec;
  return fs::exists(index, ec) ? index : dir + "/optimizer.safetensors";
}

/// The step a checkpoint was saved at, from the optimizer file's metadata
/// or its index's.
Expected<int64_t> savedStep(const std::string &location) {
  std::string text;
  if (location.size() > 5 && location.compare(location.size() - 5, 5, ".json") == 0) {
    std::ifstream in(location);
    std::stringstream buffer;
    buffer << in.rdbuf();
    nlohmann::json index = nlohmann::json::parse(buffer.str(), nullptr, /*exceptions=*/false);
    if (index.is_object() && index.contains("metadata") && index["metadata"].is_object() &&
        index["metadata"].contains("step") && index["metadata"]["step"].is_string())
      text = index["metadata"]["step"].get<std::string>();
  } else {
    auto file = SafetensorsFile::open(location);
    if (!file)
      return file.takeError();
    auto it = (*file)->metadata().find("step");
    if (it != (*file)->metadata().end())
      text = it->second;
  }
  if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos)
    return fileError(location, "no valid 'step' in the metadata");
  return std::stoll(text);
}

} // namespace

Error checkSaveTarget(const std::string &dir) {
  std::error_code ec;
  if (!dir.empty() && fs::exists(dir, ec) &&
      !(fs::is_directory(dir, ec) && (fs::exists(dir + "/optimizer.safetensors", ec) ||
                                      fs::exists(dir + "/optimizer.safetensors.index.json", ec))))
    return fileError(dir, "exists and is not a dsv3c checkpoint; refusing to replace it "
                          "(choose another --save directory)");
  return Error::success();
}

Error checkResumeSource(const std::string &dir) {
  if (auto model = WeightStore::open(dir); !model)
    return model.takeError();
  std::string opt = optimizerLocation(dir);
  if (auto store = WeightStore::open(opt); !store)
    return store.takeError();
  if (auto step = savedStep(opt); !step)
    return step.takeError();
  return Error::success();
}

Error saveCheckpoint(const std::string &dir, const CheckpointInfo &info, Session &session,
                     ProcessGroups *job) {
  if (job && job->plan().single())
    job = nullptr;
  bool root = !job || job->isRoot();
  int64_t files = job ? job->plan().expert : 1;
  int64_t expertRank = job ? job->expertRank() : 0;
  // One scratch directory beside the target, named by rank 0's process.
  int64_t token = root ? ::getpid() : 0;
  if (job)
    if (Error e = Communicator::complete(job->world().allReduceSum(ElementType::I64, &token, 1)))
      return e;
  std::string tmp = dir + ".tmp-" + std::to_string(token);
  Error created = Error::success();
  if (root) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    if (fs::create_directories(tmp, ec); ec)
      created = fileError(tmp, ec.message());
  }
  if (Error e = agreeAcrossRanks(job, std::move(created), "creating the checkpoint directory"))
    return e;

  std::vector<uint8_t> m, v;
  Error written = gatherMoments(session, job, m, v);
  // One replica's expert ranks write (pipeline ranks hold the same values).
  if (!written && (!job || (job->dataRank() == 0 && job->pipelineRank() == 0)))
    written = writeRankFiles(tmp, info, session, expertRank, files, m, v);
  if (Error e = agreeAcrossRanks(job, std::move(written), "writing the checkpoint"))
    return e;

  Error finished = Error::success();
  if (root) {
    if (files > 1)
      finished = writeIndices(tmp, info, session.layout(), session.moments().elementSize(), files);
    if (!finished)
      finished = writeFileDurably(tmp + "/config.json", info.configJson.data(),
                                  info.configJson.size());
    for (const auto &[name, text] : info.files)
      if (!finished)
        finished = writeFileDurably(tmp + "/" + name, text.data(), text.size());
    if (!finished)
      finished = replaceDirectory(tmp, dir);
  }
  return agreeAcrossRanks(job, std::move(finished), "finishing the checkpoint");
}

Expected<int64_t> loadCheckpoint(const std::string &dir, Session &session) {
  const ParamLayout &layout = session.layout();
  std::vector<float> &params = session.parameters();
  auto store = WeightStore::open(dir);
  if (!store)
    return store.takeError();
  if (Error e = loadParameters(**store, layout, params))
    return e;

  std::string location = optimizerLocation(dir);
  auto step = savedStep(location);
  if (!step)
    return step.takeError();
  auto opt = WeightStore::open(location);
  if (!opt)
    return opt.takeError();
  MomentState &mv = session.moments();
  DType want = momentDType(mv.type);
  size_t es = mv.elementSize();
  int64_t total = static_cast<int64_t>(params.size());
  std::vector<uint8_t> m(total * es, 0), v(total * es, 0);
  // Copies tensor `name` (`count` moments) to element `offset` of `dst`.
  auto read = [&](const std::string &name, int64_t count, std::vector<uint8_t> &dst,
                  int64_t offset) -> Error {
    const TensorInfo *t = (*opt)->lookup(name);
    if (!t || t->numElements() != count)
      return fileError(location, "missing or mis-sized '" + name + "' for this model");
    if (t->dtype != want)
      return fileError(location, "'" + name + "' is " + dtypeName(t->dtype) +
                                     " but this run keeps " + dtypeName(want) + " moments");
    std::memcpy(dst.data() + offset * es, t->data, t->nbytes);
    return Error::success();
  };
  bool flat = (*opt)->lookup("exp_avg") != nullptr;
  for (auto [suffix, dst] :
       {std::pair<std::string, std::vector<uint8_t> *>{"exp_avg", &m}, {"exp_avg_sq", &v}}) {
    if (flat) {
      // Written by an earlier dsv3c: one flat tensor per moment, in a
      // one-process layout.
      if (Error e = read(suffix, total, *dst, 0))
        return e;
      continue;
    }
    for (const ParamSlot &slot : layout.slots)
      for (const SlotTensor &t : slotTensors(slot))
        if (Error e = read(t.name + "." + suffix, t.count, *dst, t.offset))
          return e;
  }
  // This rank's slice (ZeRO-1), padding zero.
  const OptimizerShard &shard = session.shard();
  int64_t begin = shard.begin(total), valid = shard.valid(total);
  for (auto [from, to] : {std::pair{&m, &mv.m}, std::pair{&v, &mv.v}}) {
    std::fill(to->begin(), to->end(), 0);
    std::copy_n(from->begin() + begin * es, valid * es, to->begin());
  }
  return *step;
}

} // namespace dsv3::rt
