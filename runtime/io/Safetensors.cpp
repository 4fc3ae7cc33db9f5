//===- Safetensors.cpp - memory-mapped safetensors reader/writer ----------===//
//
// Part of the runtime core: plain C++17, POSIX and nlohmann/json, no LLVM.
// Validates every header field on open so later code can trust TensorInfo;
// resolves sharded checkpoints; writes files atomically; converts dtypes.
// The checks and messages are those of the LLVM-based reader it replaced.
//
//===----------------------------------------------------------------------===//
#include "runtime/io/Safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <dirent.h>
#include <limits>
#include <sys/stat.h>
#include <tuple>
#include <unistd.h>

// Tensor bytes are little-endian; the conversions and the writer copy them
// as host values.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");

namespace dsv3::rt {
namespace {

using nlohmann::json;

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

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string rangeString(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

/// Byte size of a tensor, or nullopt for a negative dimension or overflow.
std::optional<uint64_t> byteCount(const std::vector<int64_t> &shape,
                                  DType dtype) {
  int64_t count = static_cast<int64_t>(dtypeSize(dtype));
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(count, d, &count))
      return std::nullopt;
  return static_cast<uint64_t>(count);
}

std::string describe(const TensorInfo &t) {
  return dtypeName(t.dtype) + " " + shapeString(t.shape);
}

uint64_t read64le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

/// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF),
/// the only strings JSON can hold.
bool isUTF8(std::string_view s) {
  static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i < len)
      return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < kMinForLength[len] || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

//===----------------------------------------------------------------------===//
// JSON
//===----------------------------------------------------------------------===//

/// Accepts every event and keeps the parser's message for the first error.
class ErrorCatcher : public nlohmann::json_sax<json> {
public:
  std::string message;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t &) override { return true; }
  bool string(string_t &) override { return true; }
  bool binary(binary_t &) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t &) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string &,
                   const json::exception &ex) override {
    message = ex.what();
    return false;
  }
};

/// Parses text without exceptions; on failure sets `why` to the parser's
/// message ("parse error at line 1, column 2: ...").
std::optional<json> parseJson(std::string_view text, std::string &why) {
  // nlohmann takes a NUL byte for the end of the input and skips a leading
  // byte order mark; JSON (and llvm::json) allows neither.
  size_t nul = text.find('\0');
  if (nul != std::string_view::npos) {
    why = "unexpected NUL byte at offset " + std::to_string(nul);
    return std::nullopt;
  }
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) {
    why = "unexpected byte order mark at offset 0";
    return std::nullopt;
  }
  const char *first = text.data(), *last = text.data() + text.size();
  json value = json::parse(first, last, nullptr, /*allow_exceptions=*/false);
  if (!value.is_discarded())
    return value;
  // Parse again, only to learn why.
  ErrorCatcher catcher;
  json::sax_parse(first, last, &catcher);
  why = catcher.message.empty() ? "syntax error" : catcher.message;
  // Drop the "[json.exception.parse_error.101] " tag.
  if (why.rfind("[json.exception.", 0) == 0) {
    size_t close = why.find("] ");
    if (close != std::string::npos)
      why.erase(0, close + 2);
  }
  return std::nullopt;
}

/// A member of an object, or nullptr.
const json *member(const json &object, const char *key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

/// An integer, accepting integral floating-point numbers (4.0), as
/// llvm::json::Value::getAsInteger does.
std::optional<int64_t> asInteger(const json &v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return static_cast<int64_t>(u);
    return std::nullopt;
  }
  if (v.is_number_integer())
    return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>(), whole;
    if (std::modf(d, &whole) == 0.0 && d >= -0x1p63 && d < 0x1p63)
      return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

/// A non-negative integer written as one (not 4.0), as
/// llvm::json::Value::getAsUINT64 does.
std::optional<uint64_t> asUInt64(const json &v) {
  if (v.is_number_unsigned())
    return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// Paths (as llvm::sys::path and llvm::sys::fs)
//===----------------------------------------------------------------------===//

/// dir/name with exactly one separator between them ("" + name is name).
std::string joinPath(const std::string &dir, const std::string &name) {
  if (dir.empty())
    return name;
  if (dir.back() == '/') {
    size_t start = name.find_first_not_of('/');
    return dir + (start == std::string::npos ? "" : name.substr(start));
  }
  if (!name.empty() && name.front() == '/')
    return dir + name;
  return dir + "/" + name;
}

bool exists(const std::string &path) { return ::access(path.c_str(), F_OK) == 0; }

bool isDirectory(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The paths (dir/name) of the entries of dir whose names end with suffix.
Error listDirectory(const std::string &dir, std::string_view suffix,
                    std::vector<std::string> &found) {
  DIR *d = ::opendir(dir.c_str());
  if (!d) {
    int code = errno;
    return fileError(dir, std::string("cannot list the directory: ") +
                              std::strerror(code));
  }
  for (;;) {
    errno = 0;
    struct dirent *entry = ::readdir(d);
    if (!entry)
      break;
    std::string_view name = entry->d_name;
    if (name != "." && name != ".." && endsWith(name, suffix))
      found.push_back(joinPath(dir, std::string(name)));
  }
  int code = errno;
  ::closedir(d);
  if (code)
    return fileError(dir, std::string("cannot list the directory: ") +
                              std::strerror(code));
  return Error::success();
}

//===----------------------------------------------------------------------===//
// Reading
//===----------------------------------------------------------------------===//

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
  return fileError(t.file, "tensor '" + t.name + "' holds " +
                               std::to_string(t.nbytes) +
                               " bytes, which does not match " + describe(t));
}

struct ParsedEntry {
  TensorInfo info;
  uint64_t begin = 0, end = 0;
};

Expected<ParsedEntry> parseEntry(const std::string &path,
                                 const std::string &name, const json &value,
                                 const uint8_t *dataStart, uint64_t dataSize) {
  auto fail = [&](const std::string &problem) {
    return fileError(path, "tensor '" + name + "' " + problem);
  };
  if (!value.is_object())
    return fail("has a header entry that is not an object");
  ParsedEntry e;
  e.info.name = name;
  e.info.file = path;
  const json *dtypeText = member(value, "dtype");
  if (!dtypeText || !dtypeText->is_string())
    return fail("needs 'dtype' to be a string");
  const std::string &dtypeString = dtypeText->get_ref<const std::string &>();
  std::optional<DType> dtype = parseDType(dtypeString);
  if (!dtype)
    return fail("has unknown dtype \"" + dtypeString + "\"");
  e.info.dtype = *dtype;
  const json *shape = member(value, "shape");
  if (!shape || !shape->is_array())
    return fail("needs 'shape' to be an array of non-negative integers");
  for (const json &dim : *shape) {
    std::optional<int64_t> d = asInteger(dim);
    if (!d || *d < 0)
      return fail("needs 'shape' to be an array of non-negative integers");
    e.info.shape.push_back(*d);
  }
  std::optional<uint64_t> need = byteCount(e.info.shape, e.info.dtype);
  if (!need)
    return fail("has shape " + shapeString(e.info.shape) +
                " with too many elements");
  const json *offsets = member(value, "data_offsets");
  std::optional<uint64_t> begin, end;
  if (offsets && offsets->is_array() && offsets->size() == 2) {
    begin = asUInt64((*offsets)[0]);
    end = asUInt64((*offsets)[1]);
  }
  if (!begin || !end)
    return fail("needs 'data_offsets' to be two non-negative integers");
  std::string range = rangeString(*begin, *end);
  if (*begin > *end)
    return fail("has data_offsets " + range + " with begin after end");
  if (*end > dataSize)
    return fail("data range " + range + " exceeds the data section (" +
                std::to_string(dataSize) + " bytes)");
  if (*end - *begin != *need)
    return fail("data range " + range + " holds " +
                std::to_string(*end - *begin) + " bytes but " +
                describe(e.info) + " needs " + std::to_string(*need));
  e.info.data = dataStart + *begin;
  e.info.nbytes = static_cast<size_t>(*need);
  e.begin = *begin;
  e.end = *end;
  return e;
}

Error parseMetadata(const std::string &path, const json &value,
                    std::map<std::string, std::string> &meta) {
  if (!value.is_object())
    return fileError(path, "'__metadata__' is not an object");
  for (auto it = value.begin(); it != value.end(); ++it) { // sorted keys
    if (!it->is_string())
      return fileError(path, "'__metadata__' value of '" + it.key() +
                                 "' is not a string");
    meta[it.key()] = it->get<std::string>();
  }
  return Error::success();
}

} // namespace

std::string dtypeName(DType dtype) { return infoOf(dtype).name; }

size_t dtypeSize(DType dtype) { return infoOf(dtype).size; }

std::optional<DType> parseDType(std::string_view name) {
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
SafetensorsFile::open(const std::string &path) {
  Expected<MappedFile> mapped =
      mapInputFile(path, std::numeric_limits<uint64_t>::max());
  if (!mapped)
    return mapped.takeError();
  const uint8_t *bytes = mapped->data();
  uint64_t size = mapped->size();
  if (size < 8)
    return fileError(path, "file is " + std::to_string(size) +
                               " bytes, too short for the 8-byte header "
                               "length");
  uint64_t headerLen = read64le(bytes);
  if (headerLen > kMaxHeaderBytes)
    return fileError(path, "header length " + std::to_string(headerLen) +
                               " exceeds the limit of " +
                               std::to_string(kMaxHeaderBytes) + " bytes");
  if (headerLen > size - 8)
    return fileError(path, "header length " + std::to_string(headerLen) +
                               " exceeds the file size (" +
                               std::to_string(size) + " bytes)");
  std::string why;
  std::optional<json> header = parseJson(
      mapped->text().substr(8, static_cast<size_t>(headerLen)), why);
  if (!header)
    return fileError(path, "invalid header JSON: " + why);
  if (!header->is_object())
    return fileError(path, "header is not a JSON object");

  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->filePath = path;
  const uint8_t *dataStart = bytes + 8 + headerLen;
  uint64_t dataSize = size - 8 - headerLen;
  std::vector<ParsedEntry> parsed;
  for (auto it = header->begin(); it != header->end(); ++it) { // sorted keys
    if (it.key() == "__metadata__") {
      if (Error err = parseMetadata(path, *it, file->meta))
        return err;
      continue;
    }
    Expected<ParsedEntry> entry =
        parseEntry(path, it.key(), *it, dataStart, dataSize);
    if (!entry)
      return entry.takeError();
    parsed.push_back(std::move(*entry));
  }

  // Sorted by start, a non-empty range overlaps an earlier one exactly when it
  // starts before the furthest end seen so far.
  std::sort(parsed.begin(), parsed.end(),
            [](const ParsedEntry &a, const ParsedEntry &b) {
              return std::tie(a.begin, a.end, a.info.name) <
                     std::tie(b.begin, b.end, b.info.name);
            });
  const ParsedEntry *furthest = nullptr;
  for (const ParsedEntry &e : parsed) {
    if (e.begin == e.end)
      continue;
    if (furthest && e.begin < furthest->end)
      return fileError(path, "tensors '" + furthest->info.name + "' " +
                                 rangeString(furthest->begin, furthest->end) +
                                 " and '" + e.info.name + "' " +
                                 rangeString(e.begin, e.end) + " overlap");
    if (!furthest || e.end > furthest->end)
      furthest = &e;
  }

  for (ParsedEntry &e : parsed) {
    file->index[e.info.name] = file->tensorList.size();
    file->tensorList.push_back(std::move(e.info));
  }
  // Moving the mapping keeps its address, so the data pointers stay valid.
  file->mapping = std::move(*mapped);
  return file;
}

const TensorInfo *SafetensorsFile::lookup(std::string_view name) const {
  auto it = index.find(name);
  return it == index.end() ? nullptr : &tensorList[it->second];
}

//===----------------------------------------------------------------------===//
// WeightStore
//===----------------------------------------------------------------------===//

Error WeightStore::addFile(const std::string &path) {
  Expected<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  for (const TensorInfo &t : (*file)->tensors()) {
    auto [it, inserted] = byName.emplace(t.name, &t);
    if (!inserted)
      return fileError(desc, "tensor '" + t.name + "' appears in both " +
                                 it->second->file + " and " + t.file);
  }
  files.push_back(std::move(*file));
  return Error::success();
}

Error WeightStore::addIndex(const std::string &indexPath) {
  Expected<MappedFile> mapped = mapInputFile(indexPath, kMaxIndexBytes);
  if (!mapped)
    return mapped.takeError();
  std::string why;
  std::optional<json> root = parseJson(mapped->text(), why);
  if (!root)
    return fileError(indexPath, "invalid JSON: " + why);
  const json *weightMap = root->is_object() ? member(*root, "weight_map")
                                            : nullptr;
  if (!weightMap || !weightMap->is_object())
    return fileError(indexPath, "missing 'weight_map' object");
  if (weightMap->empty())
    return fileError(indexPath, "'weight_map' is empty");

  std::string dir = parentPath(indexPath);
  std::map<std::string, const SafetensorsFile *, std::less<>> shards;
  for (auto kv = weightMap->begin(); kv != weightMap->end(); ++kv) {
    const std::string &name = kv.key();
    if (!kv->is_string())
      return fileError(indexPath, "'weight_map' entry for '" + name +
                                      "' is not a string");
    const std::string &shardName = kv->get_ref<const std::string &>();
    auto shard = shards.find(shardName);
    if (shard == shards.end()) {
      std::string shardPath = joinPath(dir, shardName);
      if (!exists(shardPath))
        return fileError(indexPath, "shard '" + shardPath + "' (holding '" +
                                        name + "') does not exist");
      Expected<std::unique_ptr<SafetensorsFile>> file =
          SafetensorsFile::open(shardPath);
      if (!file)
        return file.takeError();
      shard = shards.emplace(shardName, file->get()).first;
      files.push_back(std::move(*file));
    }
    const TensorInfo *t = shard->second->lookup(name);
    if (!t)
      return fileError(indexPath, "tensor '" + name + "' is mapped to shard '" +
                                      shardName +
                                      "', which does not contain it");
    byName.emplace(name, t);
  }
  return Error::success();
}

Expected<std::unique_ptr<WeightStore>>
WeightStore::open(const std::string &location) {
  auto store = std::unique_ptr<WeightStore>(new WeightStore());
  store->desc = location;
  auto populate = [&]() -> Error {
    if (!isDirectory(location))
      return endsWith(location, ".index.json") ? store->addIndex(location)
                                                : store->addFile(location);
    std::string index = joinPath(location, "model.safetensors.index.json");
    if (exists(index))
      return store->addIndex(index);
    std::string single = joinPath(location, "model.safetensors");
    if (exists(single))
      return store->addFile(single);
    std::vector<std::string> found;
    if (Error err = listDirectory(location, ".safetensors", found))
      return err;
    if (found.empty())
      return fileError(location,
                       "no model.safetensors, model.safetensors.index.json or "
                       "*.safetensors files in this directory");
    std::sort(found.begin(), found.end());
    for (const std::string &path : found)
      if (Error err = store->addFile(path))
        return err;
    return Error::success();
  };
  if (Error err = populate())
    return err;
  return store;
}

const TensorInfo *WeightStore::lookup(std::string_view name) const {
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
  uint32_t wide = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
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
    return fileError(t.file, "tensor '" + t.name + "' has dtype " +
                                 dtypeName(t.dtype) +
                                 ", not a floating-point type");
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
    return fileError(t.file, "tensor '" + t.name + "' has dtype " +
                                 dtypeName(t.dtype) +
                                 ", not an integer type");
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// SafetensorsWriter
//===----------------------------------------------------------------------===//

void SafetensorsWriter::addTensor(std::string name, DType dtype,
                                  std::vector<int64_t> shape,
                                  const void *bytes, size_t nbytes) {
  const auto *first = static_cast<const uint8_t *>(bytes);
  addTensor(std::move(name), dtype, std::move(shape),
            std::vector<uint8_t>(first, first + nbytes));
}

void SafetensorsWriter::addTensor(std::string name, DType dtype,
                                  std::vector<int64_t> shape,
                                  std::vector<uint8_t> bytes) {
  entries.push_back(
      {std::move(name), dtype, std::move(shape), std::move(bytes)});
}

void SafetensorsWriter::addF32(std::string name, std::vector<int64_t> shape,
                               const float *values, size_t count) {
  addTensor(std::move(name), DType::F32, std::move(shape), values,
            count * sizeof(float));
}

void SafetensorsWriter::addF32(std::string name, std::vector<int64_t> shape,
                               const std::vector<float> &values) {
  addF32(std::move(name), std::move(shape), values.data(), values.size());
}

void SafetensorsWriter::addI64(std::string name, std::vector<int64_t> shape,
                               const int64_t *values, size_t count) {
  addTensor(std::move(name), DType::I64, std::move(shape), values,
            count * sizeof(int64_t));
}

void SafetensorsWriter::addI64(std::string name, std::vector<int64_t> shape,
                               const std::vector<int64_t> &values) {
  addI64(std::move(name), std::move(shape), values.data(), values.size());
}

void SafetensorsWriter::setMetadata(std::string key, std::string value) {
  meta[std::move(key)] = std::move(value);
}

Error SafetensorsWriter::write(const std::string &path) const {
  json header = json::object();
  uint64_t offset = 0;
  for (const Entry &e : entries) {
    if (e.name == "__metadata__")
      return fileError(path, "tensor name '__metadata__' is reserved");
    std::optional<uint64_t> need = byteCount(e.shape, e.dtype);
    if (!need || *need != e.bytes.size())
      return fileError(path, "tensor '" + e.name + "' has " +
                                 std::to_string(e.bytes.size()) +
                                 " bytes, which does not match " +
                                 dtypeName(e.dtype) + " " +
                                 shapeString(e.shape));
    if (!isUTF8(e.name))
      return fileError(path, "tensor '" + e.name +
                                 "' has a name that is not valid UTF-8");
    if (header.contains(e.name))
      return fileError(path, "tensor '" + e.name + "' was added twice");
    json entry = json::object();
    entry["dtype"] = dtypeName(e.dtype);
    entry["shape"] = e.shape;
    entry["data_offsets"] = json::array({offset, offset + *need});
    header[e.name] = std::move(entry);
    offset += *need;
  }
  if (!meta.empty()) {
    json m = json::object();
    for (const auto &[k, v] : meta) {
      if (!isUTF8(k))
        return fileError(path, "'__metadata__' key '" + k +
                                   "' is not valid UTF-8");
      if (!isUTF8(v))
        return fileError(path, "'__metadata__' value of '" + k +
                                   "' is not valid UTF-8");
      m[k] = v;
    }
    header["__metadata__"] = std::move(m);
  }
  // Compact, keys sorted (as llvm::json prints); every string was checked, so
  // the replacement handler never acts and dump() cannot throw.
  std::string text =
      header.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');

  uint8_t length[8];
  uint64_t n = text.size();
  for (uint8_t &byte : length) {
    byte = static_cast<uint8_t>(n & 0xFF);
    n >>= 8;
  }
  std::vector<ByteRange> pieces = {{length, sizeof(length)},
                                   {text.data(), text.size()}};
  for (const Entry &e : entries)
    pieces.push_back({e.bytes.data(), e.bytes.size()});
  return writeFileDurably(path, pieces);
}

} // namespace dsv3::rt
