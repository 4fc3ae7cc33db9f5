//===- Data.cpp - training batches ----------------------------------------===//
#include "runtime/train/Data.h"

#include "runtime/io/Safetensors.h"
#include "runtime/support/File.h"

#include <algorithm>
#include <optional>

namespace dsv3::rt {
namespace {

class FixedBatch : public DataSource {
public:
  FixedBatch(std::vector<int64_t> ids, std::optional<std::vector<int64_t>> segs,
             int64_t b, int64_t t, std::string path)
      : ids(std::move(ids)), segs(std::move(segs)), path(std::move(path)) {
    batch_ = b;
    seqLen_ = t;
  }
  void fill(uint64_t, int64_t, int64_t, std::vector<int64_t> &out) const override {
    out = ids;
  }
  std::string describe() const override {
    return path + (segs ? " (fixed batch, packed documents)" : " (fixed batch)");
  }
  const std::vector<int64_t> *segments() const override {
    return segs ? &*segs : nullptr;
  }

private:
  std::vector<int64_t> ids;
  std::optional<std::vector<int64_t>> segs;
  std::string path;
};

/// SplitMix64: a well-mixed hash of the window coordinates.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Where row `row` of micro-batch `micro` of `step` starts among `windows`
/// windows of a corpus: a hash of the coordinates, so any step can be
/// replayed (resume) without drawing the ones before it.
uint64_t windowStart(uint64_t seed, int64_t step, int64_t micro, int64_t row,
                     uint64_t windows) {
  return mix(mix(mix(mix(seed) ^ step) ^ micro) ^ row) % windows;
}

class ByteCorpus : public DataSource {
public:
  ByteCorpus(MappedFile text, int64_t b, int64_t t, std::string path)
      : text(std::move(text)), path(std::move(path)) {
    batch_ = b;
    seqLen_ = t;
  }
  void fill(uint64_t seed, int64_t step, int64_t micro,
            std::vector<int64_t> &out) const override {
    out.resize(batch_ * seqLen_);
    std::string_view bytes = text.text();
    uint64_t windows = bytes.size() - seqLen_ + 1;
    for (int64_t r = 0; r < batch_; ++r) {
      uint64_t start = windowStart(seed, step, micro, r, windows);
      for (int64_t i = 0; i < seqLen_; ++i)
        out[r * seqLen_ + i] = static_cast<uint8_t>(bytes[start + i]);
    }
  }
  std::string describe() const override {
    return path + " (" + std::to_string(text.size()) +
           " bytes, byte-level tokens)";
  }

private:
  MappedFile text;
  std::string path;
};

/// Windows of a tokenized corpus, sampled as ByteCorpus samples bytes.
class TokenCorpus : public DataSource {
public:
  TokenCorpus(std::vector<int64_t> ids, int64_t b, int64_t t, std::string origin)
      : ids(std::move(ids)), origin(std::move(origin)) {
    batch_ = b;
    seqLen_ = t;
  }
  void fill(uint64_t seed, int64_t step, int64_t micro,
            std::vector<int64_t> &out) const override {
    out.resize(batch_ * seqLen_);
    uint64_t windows = ids.size() - seqLen_ + 1;
    for (int64_t r = 0; r < batch_; ++r) {
      uint64_t start = windowStart(seed, step, micro, r, windows);
      std::copy_n(ids.begin() + start, seqLen_, out.begin() + r * seqLen_);
    }
  }
  std::string describe() const override {
    return origin + " (" + std::to_string(ids.size()) + " tokens)";
  }

private:
  std::vector<int64_t> ids;
  std::string origin;
};

} // namespace

Expected<std::unique_ptr<DataSource>>
tokenCorpus(std::vector<int64_t> ids, const std::string &origin, int64_t vocabSize,
            int64_t batch, int64_t seqLen) {
  if (static_cast<int64_t>(ids.size()) < seqLen + 1)
    return fileError(origin, "corpus of " + std::to_string(ids.size()) +
                                 " tokens is shorter than one sequence (" +
                                 std::to_string(seqLen) + ")");
  for (int64_t id : ids)
    if (id < 0 || id >= vocabSize)
      return fileError(origin, "token " + std::to_string(id) +
                                   " is outside the model's vocabulary (" +
                                   std::to_string(vocabSize) + ")");
  return std::make_unique<TokenCorpus>(std::move(ids), batch, seqLen, origin);
}

Expected<std::unique_ptr<DataSource>>
openFixedBatch(const std::string &path, int64_t vocabSize) {
  auto file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  const TensorInfo *t = (*file)->lookup("input_ids");
  if (!t)
    return fileError(path, "no tensor named 'input_ids'");
  if (t->dtype != DType::I64 && t->dtype != DType::I32)
    return fileError(path, "input_ids must be int64 or int32, got " + dtypeName(t->dtype));
  if (t->shape.size() != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
    return fileError(path, "input_ids must be a non-empty [batch, seq] matrix");
  std::vector<int64_t> ids(t->numElements());
  if (Error e = convertToI64(*t, ids.data()))
    return e;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocabSize)
      return fileError(path, "input_ids[" + std::to_string(i / t->shape[1]) +
                                 ", " + std::to_string(i % t->shape[1]) + "] = " +
                                 std::to_string(ids[i]) +
                                 " is outside the vocabulary [0, " +
                                 std::to_string(vocabSize) + ")");
  std::optional<std::vector<int64_t>> segs;
  if (const TensorInfo *s = (*file)->lookup("segment_ids")) {
    if ((s->dtype != DType::I64 && s->dtype != DType::I32) || s->shape != t->shape)
      return fileError(path, "segment_ids must be int64/int32 with the shape of input_ids");
    segs.emplace(s->numElements());
    if (Error e = convertToI64(*s, segs->data()))
      return e;
  }
  return std::make_unique<FixedBatch>(std::move(ids), std::move(segs),
                                      t->shape[0], t->shape[1], path);
}

Expected<std::unique_ptr<DataSource>>
openByteCorpus(const std::string &path, int64_t vocabSize, int64_t batch,
               int64_t seqLen) {
  if (vocabSize < 256)
    return fileError(path, "the byte-level tokenizer needs a vocabulary of at "
                           "least 256, the model has " +
                               std::to_string(vocabSize));
  // Corpora are mapped, never read into memory: any size the address space
  // holds is fine.
  Expected<MappedFile> text = mapInputFile(path, uint64_t(1) << 46);
  if (!text)
    return text.takeError();
  if (static_cast<int64_t>(text->size()) < seqLen + 1)
    return fileError(path, "corpus of " + std::to_string(text->size()) +
                               " bytes is shorter than one sequence (" +
                               std::to_string(seqLen) + ")");
  return std::make_unique<ByteCorpus>(std::move(*text), batch, seqLen, path);
}

} // namespace dsv3::rt
