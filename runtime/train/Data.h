//===- Data.h - training batches --------------------------------*- C++ -*-===//
//
// Where token batches come from: a fixed batch repeated every step, or
// windows of a byte-tokenised text corpus. The window for (seed, step,
// micro-batch, row) is a pure function of those numbers, so a resumed run
// sees exactly the batches the uninterrupted run would have seen.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_TRAIN_DATA_H
#define DSV3_RUNTIME_TRAIN_DATA_H

#include "runtime/support/Error.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsv3::rt {

class DataSource {
public:
  virtual ~DataSource() = default;
  int64_t batch() const { return batch_; }
  int64_t seqLen() const { return seqLen_; }
  /// Fills `ids` ([batch, seq], row-major) for one micro-batch.
  virtual void fill(uint64_t seed, int64_t step, int64_t micro,
                    std::vector<int64_t> &ids) const = 0;
  virtual std::string describe() const = 0;
  /// Document ids of packed rows ([batch, seq]), or null when rows are
  /// single sequences.
  virtual const std::vector<int64_t> *segments() const { return nullptr; }

protected:
  int64_t batch_ = 0, seqLen_ = 0;
};

/// input_ids (and, for packed rows, segment_ids) of a safetensors file,
/// the same batch every step.
Expected<std::unique_ptr<DataSource>>
openFixedBatch(const std::string &path, int64_t vocabSize);

/// A text file read with the byte-level tokenizer (token = byte value).
Expected<std::unique_ptr<DataSource>>
openByteCorpus(const std::string &path, int64_t vocabSize, int64_t batch,
               int64_t seqLen);

/// Token ids of a corpus already tokenized (`dsv3c train --tokenizer`):
/// windows sampled like the byte corpus's. `origin` names the corpus.
Expected<std::unique_ptr<DataSource>>
tokenCorpus(std::vector<int64_t> ids, const std::string &origin, int64_t vocabSize,
            int64_t batch, int64_t seqLen);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_TRAIN_DATA_H
