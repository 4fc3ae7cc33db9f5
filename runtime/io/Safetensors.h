//===- Safetensors.h - safetensors read/write/convert -----------*- C++ -*-===//
//
// Part of the runtime core, which builds with no LLVM or MLIR installed.
// Memory-mapped reader for .safetensors files, a WeightStore that spans single
// files and sharded checkpoints, an atomic writer, and dtype conversion. Every
// error is one line: `<file path>: <problem>`.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_IO_SAFETENSORS_H
#define DSV3_RUNTIME_IO_SAFETENSORS_H

#include "runtime/support/Error.h"
#include "runtime/support/File.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::rt {

enum class DType {
  F64,
  F32,
  F16,
  BF16,
  F8_E4M3,
  F8_E5M2,
  I64,
  I32,
  I16,
  I8,
  U8,
  BOOL
};

/// The safetensors name: "F32", "BF16", ...
std::string dtypeName(DType dtype);
std::optional<DType> parseDType(std::string_view name);
size_t dtypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr; // points into the mapping
  size_t nbytes = 0;
  std::string file; // file it lives in
  int64_t numElements() const;
};

/// One memory-mapped .safetensors file, validated on open.
class SafetensorsFile {
public:
  static Expected<std::unique_ptr<SafetensorsFile>>
  open(const std::string &path);
  const TensorInfo *lookup(std::string_view name) const; // nullptr if absent
  /// In data order (ascending data_offsets), not header order.
  const std::vector<TensorInfo> &tensors() const { return tensorList; }
  const std::map<std::string, std::string> &metadata() const { return meta; }
  const std::string &path() const { return filePath; }

private:
  SafetensorsFile() = default;
  std::string filePath;
  MappedFile mapping;
  std::vector<TensorInfo> tensorList;
  std::map<std::string, size_t, std::less<>> index;
  std::map<std::string, std::string> meta;
};

/// A checkpoint: a single file, a model.safetensors.index.json (sharded;
/// "weight_map": name -> shard file), or a directory holding either of
/// model.safetensors.index.json / model.safetensors, else all *.safetensors.
class WeightStore {
public:
  static Expected<std::unique_ptr<WeightStore>>
  open(const std::string &fileOrDirectory);
  const TensorInfo *lookup(std::string_view name) const;
  std::vector<std::string> names() const; // sorted
  /// The path given to open(), used in messages.
  const std::string &description() const { return desc; }

private:
  WeightStore() = default;
  Error addFile(const std::string &path);
  Error addIndex(const std::string &indexPath);

  std::string desc;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const TensorInfo *, std::less<>> byName;
};

/// Converts any float dtype (F64/F32/F16/BF16/F8_E4M3/F8_E5M2) to float32;
/// other dtypes are an error. dst holds t.numElements() values.
Error convertToF32(const TensorInfo &t, float *dst);
/// Reads integer tensors (I64/I32/I16/I8/U8) into int64.
Error convertToI64(const TensorInfo &t, int64_t *dst);

float bf16ToF32(uint16_t bits);
float f16ToF32(uint16_t bits);
float e4m3fnToF32(uint8_t bits); // 0x7F/0xFF are NaN; no infinities
float e5m2ToF32(uint8_t bits);

/// Collects tensors (copying their bytes), then writes them atomically:
/// "<path>.tmp.<pid>", fsync, rename, fsync of the directory. Header: 8-byte
/// LE length, JSON padded with spaces to a multiple of 8, then the data in the
/// order tensors were added.
class SafetensorsWriter {
public:
  void addTensor(std::string name, DType dtype, std::vector<int64_t> shape,
                 const void *bytes, size_t nbytes);
  void addTensor(std::string name, DType dtype, std::vector<int64_t> shape,
                 std::vector<uint8_t> bytes);
  void addF32(std::string name, std::vector<int64_t> shape,
              const float *values, size_t count);
  void addF32(std::string name, std::vector<int64_t> shape,
              const std::vector<float> &values);
  void addI64(std::string name, std::vector<int64_t> shape,
              const int64_t *values, size_t count);
  void addI64(std::string name, std::vector<int64_t> shape,
              const std::vector<int64_t> &values);
  void setMetadata(std::string key, std::string value);
  /// Fails (naming path) on duplicate or reserved names, names or metadata
  /// that are not UTF-8, or a byte count that does not match the shape.
  Error write(const std::string &path) const;

private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries;
  std::map<std::string, std::string> meta;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_IO_SAFETENSORS_H
