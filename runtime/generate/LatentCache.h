//===- LatentCache.h - the MLA latent KV cache of a generation --*- C++ -*-===//
//
// Part of the generation runtime (no LLVM). One buffer [layers, slots,
// capacity, row] that compiled decode steps read as their `kv_cache`
// argument: per token and layer a row of kv_lora_rank + qk_rope_head_dim
// values (the normalised latent and the rotated rope key), the MTP layer
// last. Steps return their new rows; the cache writes the ones a sequence
// keeps at their positions, so a rejected draft's rows are simply never
// written (rollback is the sequence length, kept by the caller). Rows are
// stored as float32 or BF16 (rounded to nearest even when written).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_GENERATE_LATENTCACHE_H
#define DSV3_RUNTIME_GENERATE_LATENTCACHE_H

#include "runtime/abi/Abi.h"

#include <cstdint>
#include <vector>

namespace dsv3::rt {

class LatentCache {
public:
  /// From the `kv_cache` argument's shape [layers, slots, capacity, row]
  /// and element type (f32 or bf16).
  explicit LatentCache(const std::vector<int64_t> &shape,
                       ElementType type = ElementType::F32);

  int64_t layers() const { return shape_[0]; }
  int64_t slots() const { return shape_[1]; }
  int64_t capacity() const { return shape_[2]; }
  int64_t rowWidth() const { return shape_[3]; }
  ElementType elementType() const { return type_; }
  /// Bytes one token occupies (every layer's row).
  int64_t bytesPerToken() const {
    return layers() * rowWidth() * int64_t(elementSize(type_));
  }
  int64_t bytes() const { return int64_t(data_.size()); }
  BufferArg arg() { return {data_.data(), shape_}; }

  /// Writes `count` rows of batch row `b` of a step's `rows` output
  /// ([n, B, T, row], layers firstLayer..firstLayer+n-1) into `slot` from
  /// position `position` on.
  void write(const HostTensor &rows, int64_t firstLayer, int64_t b,
             int64_t count, int64_t slot, int64_t position);
  /// Element c of the row of (layer, slot, position), as float32.
  float at(int64_t layer, int64_t slot, int64_t position, int64_t c) const;

private:
  std::vector<int64_t> shape_;
  ElementType type_;
  std::vector<uint8_t> data_;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_GENERATE_LATENTCACHE_H
