//===- Safetensors.cpp - memory-mapped safetensors reader/writer ----------===//
//
// Validates every header field on open so later code can trust TensorInfo;
// resolves sharded checkpoints; writes files atomically; converts dtypes.
//
//===----------------------------------------------------------------------===//
#include "frontends/model/Safetensors.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/bit.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <tuple>
#include <unistd.h>

using namespace llvm;

// Tensor bytes are little-endian; the conversions and the writer copy them
// as host values.
static_assert(llvm::endianness::native == llvm::endianness::little,
              "safetensors I/O assumes a little-endian host");

namespace dsv3 {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr uint64_t kMaxIndexBytes = uint64_t(256) << 20;

struct DTypeInfo {
  DType dtype;
  const char *name;
  size_t size;
};
// Indexed by the enum value.
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8},         {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::I64, "I64", 8},         {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},         {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},           {DType::BOOL, "BOOL", 1},
};

const DTypeInfo &infoOf(DType d) { return kDTypes[static_cast<size_t>(d)]; }

std::string shapeString(ArrayRef<int64_t> shape) {
  std::string s;
  raw_string_ostream os(s);
  os << '[';
  interleaveComma(shape, os);
  os << ']';
  return s;
}

/// Byte size of a tensor, or nullopt for a negative dimension or overflow.
std::optional<uint64_t> byteCount(ArrayRef<int64_t> shape, DType dtype) {
  int64_t count = static_cast<int64_t>(dtypeSize(dtype));
  for (int64_t d : shape)
    if (d < 0 || MulOverflow(count, d, count))
      return std::nullopt;
  return static_cast<uint64_t>(count);
}

std::string describe(const TensorInfo &t) {
  return (dtypeName(t.dtype) + " " + shapeString(t.shape)).str();
}

/// IEEE-style decoding of small binary floats. Without IEEE specials (the
/// "fn" formats) the all-ones pattern is NaN and there are no infinities.
float decodeMinifloat(uint32_t bits, int expBits, int manBits,
                      bool ieeeSpecials) {
  uint32_t man = bits & ((1u << manBits) - 1);
  uint32_t exp = (bits >> manBits) & ((1u << expBits) - 1);
  bool negative = (bits >> (manBits + expBits)) & 1;
  uint32_t maxExp = (1u << expBits) - 1;
  int bias = (1 << (expBits - 1)) - 1;
  float mag;
  if (ieeeSpecials && exp == maxExp)
    mag = man ? std::numeric_limits<float>::quiet_NaN()
              : std::numeric_limits<float>::infinity();
  else if (!ieeeSpecials && exp == maxExp && man == (1u << manBits) - 1)
    mag = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0)
    mag = std::ldexp(static_cast<float>(man), 1 - bias - manBits);
  else
    mag = std::ldexp(static_cast<float>(man | (1u << manBits)),
                     static_cast<int>(exp) - bias - manBits);
  return negative ? -mag : mag;
}

template <float (*Decode)(uint8_t)> const std::array<float, 256> &byteTable() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t;
    for (unsigned i = 0; i < 256; ++i)
      t[i] = Decode(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

/// Applies fn to each stored Raw element (unaligned reads are fine).
template <typename Raw, typename Out, typename Fn>
void convertEach(const TensorInfo &t, Out *dst, Fn fn) {
  size_t n = t.nbytes / sizeof(Raw);
  for (size_t i = 0; i < n; ++i) {
    Raw raw;
    std::memcpy(&raw, t.data + i * sizeof(Raw), sizeof(Raw));
    dst[i] = fn(raw);
  }
}

/// Guards conversions against hand-built TensorInfos that would overread.
Error checkConsistent(const TensorInfo &t) {
  std::optional<uint64_t> need = byteCount(t.shape, t.dtype);
  if (need && *need == t.nbytes && (t.data || t.nbytes == 0))
    return Error::success();
  return makeFileError(
      t.file, formatv("tensor '{0}' holds {1} bytes, which does not match {2}",
                      t.name, t.nbytes, describe(t)));
}

struct ParsedEntry {
  TensorInfo info;
  uint64_t begin = 0, end = 0;
};

Expected<ParsedEntry> parseEntry(StringRef path, StringRef name,
                                 const json::Value &value,
                                 const uint8_t *dataStart, uint64_t dataSize) {
  auto fail = [&](const Twine &problem) {
    return makeFileError(path, "tensor '" + name + "' " + problem);
  };
  const json::Object *obj = value.getAsObject();
  if (!obj)
    return fail("has a header entry that is not an object");
  ParsedEntry e;
  e.info.name = name.str();
  e.info.file = path.str();
  std::optional<StringRef> dtypeText = obj->getString("dtype");
  if (!dtypeText)
    return fail("needs 'dtype' to be a string");
  std::optional<DType> dtype = parseDType(*dtypeText);
  if (!dtype)
    return fail("has unknown dtype \"" + *dtypeText + "\"");
  e.info.dtype = *dtype;
  const json::Array *shape = obj->getArray("shape");
  if (!shape)
    return fail("needs 'shape' to be an array of non-negative integers");
  for (const json::Value &dim : *shape) {
    std::optional<int64_t> d = dim.getAsInteger();
    if (!d || *d < 0)
      return fail("needs 'shape' to be an array of non-negative integers");
    e.info.shape.push_back(*d);
  }
  std::optional<uint64_t> need = byteCount(e.info.shape, e.info.dtype);
  if (!need)
    return fail("has shape " + shapeString(e.info.shape) +
                " with too many elements");
  const json::Array *offsets = obj->getArray("data_offsets");
  std::optional<uint64_t> begin, end;
  if (offsets && offsets->size() == 2) {
    begin = (*offsets)[0].getAsUINT64();
    end = (*offsets)[1].getAsUINT64();
  }
  if (!begin || !end)
    return fail("needs 'data_offsets' to be two non-negative integers");
  std::string range = formatv("[{0}, {1})", *begin, *end).str();
  if (*begin > *end)
    return fail("has data_offsets " + range + " with begin after end");
  if (*end > dataSize)
    return fail(formatv("data range {0} exceeds the data section ({1} bytes)",
                        range, dataSize));
  if (*end - *begin != *need)
    return fail(formatv("data range {0} holds {1} bytes but {2} needs {3}",
                        range, *end - *begin, describe(e.info), *need));
  e.info.data = dataStart + *begin;
  e.info.nbytes = static_cast<size_t>(*need);
  e.begin = *begin;
  e.end = *end;
  return e;
}

Error parseMetadata(StringRef path, const json::Value &value,
                    std::map<std::string, std::string> &meta) {
  const json::Object *obj = value.getAsObject();
  if (!obj)
    return makeFileError(path, "'__metadata__' is not an object");
  for (const json::Object::value_type *kv : json::sortedElements(*obj)) {
    std::optional<StringRef> text = kv->second.getAsString();
    if (!text)
      return makeFileError(path, "'__metadata__' value of '" + kv->first.str() +
                                     "' is not a string");
    meta[kv->first.str()] = text->str();
  }
  return Error::success();
}

Error errnoError(StringRef file, const Twine &what) {
  return makeFileError(
      file,
      what + ": " + std::error_code(errno, std::generic_category()).message());
}

/// Makes the rename durable.
Error syncDirectoryOf(StringRef path) {
  SmallString<256> dir = sys::path::parent_path(path);
  if (dir.empty())
    dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return errnoError(path, "cannot open the directory to sync it");
  bool synced = ::fsync(fd) == 0;
  Error err =
      synced ? Error::success() : errnoError(path, "cannot sync the directory");
  ::close(fd);
  return err;
}

} // namespace

Error makeFileError(StringRef file, const Twine &problem) {
  // One line per error, whatever names the input contained.
  std::string text = (file + ": " + problem).str();
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; },
      ' ');
  return createStringError(inconvertibleErrorCode(), text);
}

Expected<std::unique_ptr<MemoryBuffer>> readInputFile(StringRef path,
                                                      uint64_t maxBytes) {
  sys::fs::file_status status;
  if (std::error_code ec = sys::fs::status(path, status))
    return makeFileError(path, "cannot open: " + ec.message());
  if (status.type() == sys::fs::file_type::directory_file)
    return makeFileError(path, "is a directory, not a file");
  if (status.type() != sys::fs::file_type::regular_file)
    return makeFileError(path, "is not a regular file");
  if (status.getSize() > maxBytes)
    return makeFileError(path,
                         formatv("is {0} bytes, more than the limit of {1}",
                                 status.getSize(), maxBytes));
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer = MemoryBuffer::getFile(
      path, /*IsText=*/false, /*RequiresNullTerminator=*/false,
      /*IsVolatile=*/false);
  if (!buffer)
    return makeFileError(path, "cannot read: " + buffer.getError().message());
  return std::move(*buffer);
}

StringRef dtypeName(DType dtype) { return infoOf(dtype).name; }

size_t dtypeSize(DType dtype) { return infoOf(dtype).size; }

std::optional<DType> parseDType(StringRef name) {
  for (const DTypeInfo &d : kDTypes)
    if (name == d.name)
      return d.dtype;
  return std::nullopt;
}

int64_t TensorInfo::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

//===----------------------------------------------------------------------===//
// SafetensorsFile
//===----------------------------------------------------------------------===//

Expected<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::open(StringRef path) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      readInputFile(path, std::numeric_limits<uint64_t>::max());
  if (!buffer)
    return buffer.takeError();
  StringRef bytes = (*buffer)->getBuffer();
  if (bytes.size() < 8)
    return makeFileError(
        path,
        formatv("file is {0} bytes, too short for the 8-byte header length",
                bytes.size()));
  uint64_t headerLen = support::endian::read64le(bytes.data());
  if (headerLen > kMaxHeaderBytes)
    return makeFileError(
        path, formatv("header length {0} exceeds the limit of {1} bytes",
                      headerLen, kMaxHeaderBytes));
  if (headerLen > bytes.size() - 8)
    return makeFileError(
        path, formatv("header length {0} exceeds the file size ({1} bytes)",
                      headerLen, bytes.size()));
  Expected<json::Value> header = json::parse(bytes.substr(8, headerLen));
  if (!header)
    return makeFileError(path, "invalid header JSON: " +
                                   toString(header.takeError()));
  const json::Object *entries = header->getAsObject();
  if (!entries)
    return makeFileError(path, "header is not a JSON object");

  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->filePath = path.str();
  const uint8_t *dataStart = bytes.bytes_begin() + 8 + headerLen;
  uint64_t dataSize = bytes.size() - 8 - headerLen;
  std::vector<ParsedEntry> parsed;
  for (const json::Object::value_type *kv : json::sortedElements(*entries)) {
    if (kv->first == "__metadata__") {
      if (Error err = parseMetadata(path, kv->second, file->meta))
        return std::move(err);
      continue;
    }
    Expected<ParsedEntry> entry =
        parseEntry(path, kv->first, kv->second, dataStart, dataSize);
    if (!entry)
      return entry.takeError();
    parsed.push_back(std::move(*entry));
  }

  // Sorted by start, a non-empty range overlaps an earlier one exactly when it
  // starts before the furthest end seen so far.
  llvm::sort(parsed, [](const ParsedEntry &a, const ParsedEntry &b) {
    return std::tie(a.begin, a.end, a.info.name) <
           std::tie(b.begin, b.end, b.info.name);
  });
  const ParsedEntry *furthest = nullptr;
  for (const ParsedEntry &e : parsed) {
    if (e.begin == e.end)
      continue;
    if (furthest && e.begin < furthest->end)
      return makeFileError(
          path, formatv("tensors '{0}' [{1}, {2}) and '{3}' [{4}, {5}) overlap",
                        furthest->info.name, furthest->begin, furthest->end,
                        e.info.name, e.begin, e.end));
    if (!furthest || e.end > furthest->end)
      furthest = &e;
  }

  for (ParsedEntry &e : parsed) {
    file->index[e.info.name] = file->tensorList.size();
    file->tensorList.push_back(std::move(e.info));
  }
  file->buffer = std::move(*buffer);
  return std::move(file);
}

const TensorInfo *SafetensorsFile::lookup(StringRef name) const {
  auto it = index.find(name);
  return it == index.end() ? nullptr : &tensorList[it->second];
}

//===----------------------------------------------------------------------===//
// WeightStore
//===----------------------------------------------------------------------===//

Error WeightStore::addFile(StringRef path) {
  Expected<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  for (const TensorInfo &t : (*file)->tensors()) {
    auto [it, inserted] = byName.emplace(t.name, &t);
    if (!inserted)
      return makeFileError(desc,
                           formatv("tensor '{0}' appears in both {1} and {2}",
                                   t.name, it->second->file, t.file));
  }
  files.push_back(std::move(*file));
  return Error::success();
}

Error WeightStore::addIndex(StringRef indexPath) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      readInputFile(indexPath, kMaxIndexBytes);
  if (!buffer)
    return buffer.takeError();
  Expected<json::Value> root = json::parse((*buffer)->getBuffer());
  if (!root)
    return makeFileError(indexPath,
                         "invalid JSON: " + toString(root.takeError()));
  const json::Object *rootObj = root->getAsObject();
  const json::Object *weightMap =
      rootObj ? rootObj->getObject("weight_map") : nullptr;
  if (!weightMap)
    return makeFileError(indexPath, "missing 'weight_map' object");
  if (weightMap->empty())
    return makeFileError(indexPath, "'weight_map' is empty");

  StringRef dir = sys::path::parent_path(indexPath);
  std::map<std::string, const SafetensorsFile *, std::less<>> shards;
  for (const json::Object::value_type *kv : json::sortedElements(*weightMap)) {
    StringRef name = kv->first;
    std::optional<StringRef> shardName = kv->second.getAsString();
    if (!shardName)
      return makeFileError(indexPath, "'weight_map' entry for '" + name +
                                          "' is not a string");
    auto shard = shards.find(*shardName);
    if (shard == shards.end()) {
      SmallString<256> shardPath(dir);
      sys::path::append(shardPath, *shardName);
      if (!sys::fs::exists(shardPath))
        return makeFileError(
            indexPath, formatv("shard '{0}' (holding '{1}') does not exist",
                               shardPath, name));
      Expected<std::unique_ptr<SafetensorsFile>> file =
          SafetensorsFile::open(shardPath);
      if (!file)
        return file.takeError();
      shard = shards.emplace(shardName->str(), file->get()).first;
      files.push_back(std::move(*file));
    }
    const TensorInfo *t = shard->second->lookup(name);
    if (!t)
      return makeFileError(
          indexPath, formatv("tensor '{0}' is mapped to shard '{1}', which "
                             "does not contain it",
                             name, *shardName));
    byName.emplace(name.str(), t);
  }
  return Error::success();
}

Expected<std::unique_ptr<WeightStore>> WeightStore::open(StringRef location) {
  auto store = std::unique_ptr<WeightStore>(new WeightStore());
  store->desc = location.str();
  auto inDir = [&](StringRef name) {
    SmallString<256> p(location);
    sys::path::append(p, name);
    return std::string(p);
  };
  auto populate = [&]() -> Error {
    if (!sys::fs::is_directory(location))
      return location.ends_with(".index.json") ? store->addIndex(location)
                                               : store->addFile(location);
    if (sys::fs::exists(inDir("model.safetensors.index.json")))
      return store->addIndex(inDir("model.safetensors.index.json"));
    if (sys::fs::exists(inDir("model.safetensors")))
      return store->addFile(inDir("model.safetensors"));
    std::error_code ec;
    std::vector<std::string> found;
    for (sys::fs::directory_iterator it(location, ec), end; !ec && it != end;
         it.increment(ec))
      if (StringRef(it->path()).ends_with(".safetensors"))
        found.push_back(it->path());
    if (ec)
      return makeFileError(location,
                           "cannot list the directory: " + ec.message());
    if (found.empty())
      return makeFileError(
          location, "no model.safetensors, model.safetensors.index.json or "
                    "*.safetensors files in this directory");
    llvm::sort(found);
    for (const std::string &path : found)
      if (Error err = store->addFile(path))
        return err;
    return Error::success();
  };
  if (Error err = populate())
    return std::move(err);
  return std::move(store);
}

const TensorInfo *WeightStore::lookup(StringRef name) const {
  auto it = byName.find(name);
  return it == byName.end() ? nullptr : it->second;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> result;
  result.reserve(byName.size());
  for (const auto &kv : byName)
    result.push_back(kv.first);
  return result;
}

//===----------------------------------------------------------------------===//
// Conversion
//===----------------------------------------------------------------------===//

float bf16ToF32(uint16_t bits) {
  return llvm::bit_cast<float>(uint32_t(bits) << 16);
}

float f16ToF32(uint16_t bits) {
  return decodeMinifloat(bits, 5, 10, /*ieeeSpecials=*/true);
}

float e4m3fnToF32(uint8_t bits) {
  return decodeMinifloat(bits, 4, 3, /*ieeeSpecials=*/false);
}

// E5M2 is the upper byte of an IEEE half.
float e5m2ToF32(uint8_t bits) {
  return f16ToF32(static_cast<uint16_t>(bits << 8));
}

Error convertToF32(const TensorInfo &t, float *dst) {
  if (Error err = checkConsistent(t))
    return err;
  switch (t.dtype) {
  case DType::F64:
    convertEach<double>(t, dst, [](double v) { return static_cast<float>(v); });
    break;
  case DType::F32:
    convertEach<float>(t, dst, [](float v) { return v; });
    break;
  case DType::F16:
    convertEach<uint16_t>(t, dst, f16ToF32);
    break;
  case DType::BF16:
    convertEach<uint16_t>(t, dst, bf16ToF32);
    break;
  case DType::F8_E4M3:
    convertEach<uint8_t>(
        t, dst, [&](uint8_t b) { return byteTable<e4m3fnToF32>()[b]; });
    break;
  case DType::F8_E5M2:
    convertEach<uint8_t>(t, dst,
                         [&](uint8_t b) { return byteTable<e5m2ToF32>()[b]; });
    break;
  default:
    return makeFileError(
        t.file, formatv("tensor '{0}' has dtype {1}, not a floating-point type",
                        t.name, dtypeName(t.dtype)));
  }
  return Error::success();
}

Error convertToI64(const TensorInfo &t, int64_t *dst) {
  if (Error err = checkConsistent(t))
    return err;
  auto widen = [](auto v) { return static_cast<int64_t>(v); };
  switch (t.dtype) {
  case DType::I64:
    convertEach<int64_t>(t, dst, widen);
    break;
  case DType::I32:
    convertEach<int32_t>(t, dst, widen);
    break;
  case DType::I16:
    convertEach<int16_t>(t, dst, widen);
    break;
  case DType::I8:
    convertEach<int8_t>(t, dst, widen);
    break;
  case DType::U8:
    convertEach<uint8_t>(t, dst, widen);
    break;
  default:
    return makeFileError(
        t.file, formatv("tensor '{0}' has dtype {1}, not an integer type",
                        t.name, dtypeName(t.dtype)));
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// SafetensorsWriter
//===----------------------------------------------------------------------===//

void SafetensorsWriter::addTensor(StringRef name, DType dtype,
                                  ArrayRef<int64_t> shape,
                                  ArrayRef<uint8_t> bytes) {
  entries.push_back({name.str(), dtype, shape.vec(), bytes.vec()});
}

void SafetensorsWriter::addF32(StringRef name, ArrayRef<int64_t> shape,
                               ArrayRef<float> values) {
  addTensor(name, DType::F32, shape,
            ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(values.data()),
                              values.size() * 4));
}

void SafetensorsWriter::addI64(StringRef name, ArrayRef<int64_t> shape,
                               ArrayRef<int64_t> values) {
  addTensor(name, DType::I64, shape,
            ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(values.data()),
                              values.size() * 8));
}

void SafetensorsWriter::setMetadata(StringRef key, StringRef value) {
  meta[key.str()] = value.str();
}

Error SafetensorsWriter::write(StringRef path) const {
  json::Object header;
  uint64_t offset = 0;
  for (const Entry &e : entries) {
    if (e.name == "__metadata__")
      return makeFileError(path, "tensor name '__metadata__' is reserved");
    std::optional<uint64_t> need = byteCount(e.shape, e.dtype);
    if (!need || *need != e.bytes.size())
      return makeFileError(
          path,
          formatv("tensor '{0}' has {1} bytes, which does not match {2} {3}",
                  e.name, e.bytes.size(), dtypeName(e.dtype),
                  shapeString(e.shape)));
    json::Object entry{{"dtype", dtypeName(e.dtype)},
                       {"shape", json::Array(e.shape)},
                       {"data_offsets", json::Array{offset, offset + *need}}};
    if (!header.try_emplace(e.name, std::move(entry)).second)
      return makeFileError(path, "tensor '" + e.name + "' was added twice");
    offset += *need;
  }
  if (!meta.empty()) {
    json::Object m;
    for (const auto &[k, v] : meta)
      m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::string text = formatv("{0}", json::Value(std::move(header))).str();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string tmp = (path + ".tmp." + Twine(::getpid())).str();
  int fd;
  if (std::error_code ec =
          sys::fs::openFileForWrite(tmp, fd, sys::fs::CD_CreateAlways))
    return makeFileError(tmp, "cannot create: " + ec.message());
  auto abandon = [&](Error err) {
    sys::fs::remove(tmp);
    return err;
  };
  {
    raw_fd_ostream os(fd, /*shouldClose=*/false);
    char length[8];
    support::endian::write64le(length, text.size());
    os.write(length, sizeof(length));
    os << text;
    for (const Entry &e : entries)
      os.write(reinterpret_cast<const char *>(e.bytes.data()), e.bytes.size());
    os.flush();
    if (os.has_error()) {
      std::error_code ec = os.error();
      os.clear_error();
      ::close(fd);
      return abandon(makeFileError(tmp, "write failed: " + ec.message()));
    }
  }
  if (::fsync(fd) != 0) {
    Error err = errnoError(tmp, "fsync failed");
    ::close(fd);
    return abandon(std::move(err));
  }
  if (::close(fd) != 0)
    return abandon(errnoError(tmp, "close failed"));
  if (std::error_code ec = sys::fs::rename(tmp, path))
    return abandon(makeFileError(path, "cannot rename " + tmp +
                                           " into place: " + ec.message()));
  return syncDirectoryOf(path);
}

} // namespace dsv3
