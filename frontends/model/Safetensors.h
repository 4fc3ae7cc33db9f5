//===- Safetensors.h - safetensors read/write/convert -----------*- C++ -*-===//
//
// Memory-mapped reader for .safetensors files, a WeightStore that spans single
// files and sharded checkpoints, an atomic writer, and dtype conversion. Every
// error is one line: `<file path>: <problem>`.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_MODEL_SAFETENSORS_H
#define DSV3_FRONTENDS_MODEL_SAFETENSORS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dsv3 {

/// Makes the one-line `<file>: <problem>` error used throughout the frontend.
llvm::Error makeFileError(llvm::StringRef file, const llvm::Twine &problem);

/// Maps (or reads) a regular file of at most maxBytes. Devices, directories and
/// FIFOs are refused so a bad path can neither hang nor exhaust memory.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
readInputFile(llvm::StringRef path, uint64_t maxBytes);

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

llvm::StringRef dtypeName(DType dtype);
std::optional<DType> parseDType(llvm::StringRef name);
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
  static llvm::Expected<std::unique_ptr<SafetensorsFile>>
  open(llvm::StringRef path);
  const TensorInfo *lookup(llvm::StringRef name) const; // nullptr if absent
  /// In data order (ascending data_offsets): llvm::json drops key order.
  const std::vector<TensorInfo> &tensors() const { return tensorList; }
  const std::map<std::string, std::string> &metadata() const { return meta; }
  llvm::StringRef path() const { return filePath; }

private:
  std::string filePath;
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  std::vector<TensorInfo> tensorList;
  llvm::StringMap<size_t> index;
  std::map<std::string, std::string> meta;
};

/// A checkpoint: a single file, a model.safetensors.index.json (sharded;
/// "weight_map": name -> shard file), or a directory holding either of
/// model.safetensors.index.json / model.safetensors, else all *.safetensors.
class WeightStore {
public:
  static llvm::Expected<std::unique_ptr<WeightStore>>
  open(llvm::StringRef fileOrDirectory);
  const TensorInfo *lookup(llvm::StringRef name) const;
  std::vector<std::string> names() const;              // sorted
  llvm::StringRef description() const { return desc; } // path used for messages

private:
  llvm::Error addFile(llvm::StringRef path);
  llvm::Error addIndex(llvm::StringRef indexPath);

  std::string desc;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const TensorInfo *, std::less<>> byName;
};

/// Converts any float dtype (F64/F32/F16/BF16/F8_E4M3/F8_E5M2) to float32;
/// other dtypes are an error. dst holds t.numElements() values.
llvm::Error convertToF32(const TensorInfo &t, float *dst);
/// Reads integer tensors (I64/I32/I16/I8/U8) into int64.
llvm::Error convertToI64(const TensorInfo &t, int64_t *dst);

float bf16ToF32(uint16_t bits);
float f16ToF32(uint16_t bits);
float e4m3fnToF32(uint8_t bits); // 0x7F/0xFF are NaN; no infinities
float e5m2ToF32(uint8_t bits);

/// Collects tensors, then writes them atomically: "<path>.tmp.<pid>", fsync,
/// rename, fsync of the directory. Header: 8-byte LE length, JSON padded with
/// spaces to a multiple of 8, then the data in the order tensors were added.
class SafetensorsWriter {
public:
  void addTensor(llvm::StringRef name, DType dtype,
                 llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<uint8_t> bytes);
  void addF32(llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
              llvm::ArrayRef<float> values);
  void addI64(llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
              llvm::ArrayRef<int64_t> values);
  void setMetadata(llvm::StringRef key, llvm::StringRef value);
  /// Fails (naming path) on duplicate names or a byte count that does not
  /// match the shape.
  llvm::Error write(llvm::StringRef path) const;

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

} // namespace dsv3

#endif // DSV3_FRONTENDS_MODEL_SAFETENSORS_H
