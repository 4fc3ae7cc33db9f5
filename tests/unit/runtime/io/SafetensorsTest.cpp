//===- SafetensorsTest.cpp - runtime safetensors reader, writer, files ----===//
//
// The runtime core's safetensors I/O, which uses no LLVM: round trips through
// the writer, decodes known bit patterns, rejects each kind of malformed file,
// resolves sharded checkpoints, and opens the bundled tiny checkpoint; also
// the mapped input files and durable writes underneath. The helpers are local
// because tests/unit/model/TestSupport.h needs LLVM.
//
//===----------------------------------------------------------------------===//
#include "runtime/io/Safetensors.h"
#include "runtime/support/File.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/stat.h>
#include <unistd.h>

using namespace dsv3::rt;
namespace fs = std::filesystem;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// A path inside the source tree (models/tiny/...).
std::string sourcePath(const std::string &relative) {
  return std::string(DSV3_SOURCE_DIR) + "/" + relative;
}

/// A fresh directory, removed with its contents when the test ends.
class TempDir {
public:
  TempDir() {
    const char *base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") +
                          "/dsv3-rt-io-test.XXXXXX";
    if (::mkdtemp(pattern.data()))
      root = pattern;
    else
      ADD_FAILURE() << pattern << ": " << std::strerror(errno);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  std::string path(const std::string &name) const { return root + "/" + name; }
  /// Writes bytes to `name` and returns its path.
  std::string write(const std::string &name, const std::string &bytes) const {
    std::string p = path(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good()) << p;
    return p;
  }
  /// The names of the entries, sorted.
  std::vector<std::string> list() const {
    std::vector<std::string> names;
    for (const fs::directory_entry &e : fs::directory_iterator(root))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string root;
};

std::string readAll(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// The message of a failure; "" for success (the value is dropped).
template <typename T> std::string errorText(Expected<T> &&result) {
  return result ? std::string() : result.error().message();
}
std::string errorText(const Error &err) { return err.message(); }

std::string le64(uint64_t v) {
  std::string bytes(8, '\0');
  for (char &c : bytes) {
    c = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
  return bytes;
}

/// A raw file: 8-byte little-endian header length, header, zeroed data.
std::string rawFile(const std::string &header, size_t dataBytes,
                    uint64_t declaredLength) {
  return le64(declaredLength) + header + std::string(dataBytes, '\0');
}
std::string rawFile(const std::string &header, size_t dataBytes) {
  return rawFile(header, dataBytes, header.size());
}

std::vector<float> toF32(const TensorInfo &t) {
  std::vector<float> values(t.numElements());
  EXPECT_EQ(errorText(convertToF32(t, values.data())), "");
  return values;
}

std::vector<int64_t> toI64(const TensorInfo &t) {
  std::vector<int64_t> values(t.numElements());
  EXPECT_EQ(errorText(convertToI64(t, values.data())), "");
  return values;
}

//===----------------------------------------------------------------------===//
// Ported from tests/unit/model/SafetensorsTest.cpp
//===----------------------------------------------------------------------===//

TEST(Safetensors, DTypeNamesAndSizes) {
  EXPECT_EQ(dtypeName(DType::F8_E4M3), "F8_E4M3");
  EXPECT_EQ(parseDType("BF16"), DType::BF16);
  EXPECT_EQ(parseDType("bf16"), std::nullopt);
  EXPECT_EQ(dtypeSize(DType::F64), 8u);
  EXPECT_EQ(dtypeSize(DType::BF16), 2u);
  EXPECT_EQ(dtypeSize(DType::BOOL), 1u);
}

TEST(Safetensors, WriterReaderRoundTrip) {
  TempDir tmp;
  std::string path = tmp.path("w.safetensors");
  SafetensorsWriter w;
  std::vector<float> a = {1.5f, -2.0f, 0.25f, 3.0f, 1e-3f, -7.0f};
  w.addF32("a", {2, 3}, a);
  w.addTensor("b", DType::BF16, {2}, {0x80, 0x3F, 0x00, 0xC0}); // 1.0, -2.0
  w.addI64("ids", {3}, {1, -2, 1ll << 40});
  w.addF32("scalar", {}, {42.0f});
  w.setMetadata("format", "pt");
  ASSERT_EQ(errorText(w.write(path)), "");

  EXPECT_EQ(tmp.list(), (std::vector<std::string>{"w.safetensors"}))
      << "left behind";
  uint64_t size = fs::file_size(path);
  std::string raw = readAll(path);
  ASSERT_GE(raw.size(), 8u);
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(headerLen % 8, 0u);
  EXPECT_EQ(size, 8 + headerLen + 24 + 4 + 24 + 4);

  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << file.error().message();
  const std::vector<TensorInfo> &tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), 4u);
  EXPECT_EQ(tensors[0].name, "a"); // data order = add order
  EXPECT_EQ(tensors[3].name, "scalar");
  EXPECT_EQ((*file)->path(), path);
  EXPECT_EQ((*file)->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}}));

  const TensorInfo *ta = (*file)->lookup("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->dtype, DType::F32);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta->nbytes, 24u);
  EXPECT_EQ(ta->file, path);
  EXPECT_EQ(toF32(*ta), a);
  EXPECT_EQ(toF32(*(*file)->lookup("b")), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(toI64(*(*file)->lookup("ids")),
            (std::vector<int64_t>{1, -2, 1ll << 40}));
  const TensorInfo *scalar = (*file)->lookup("scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_EQ(scalar->numElements(), 1);
  EXPECT_EQ(toF32(*scalar), (std::vector<float>{42.0f}));
  EXPECT_EQ((*file)->lookup("absent"), nullptr);
}

TEST(Safetensors, WriterRejectsInconsistentTensors) {
  TempDir tmp;
  std::string path = tmp.path("bad.safetensors");
  SafetensorsWriter shortData;
  shortData.addF32("x", {2, 3}, {1.0f, 2.0f});
  EXPECT_EQ(errorText(shortData.write(path)),
            path + ": tensor 'x' has 8 bytes, which does not match F32 [2, 3]");
  SafetensorsWriter twice;
  twice.addF32("x", {1}, {1.0f});
  twice.addF32("x", {1}, {2.0f});
  EXPECT_EQ(errorText(twice.write(path)),
            path + ": tensor 'x' was added twice");
  EXPECT_FALSE(fs::exists(path));
  SafetensorsWriter w;
  w.addF32("x", {1}, {1.0f});
  std::string noDir = tmp.path("missing/dir.safetensors");
  EXPECT_NE(errorText(w.write(noDir)).find("cannot create"), std::string::npos);
}

TEST(Safetensors, DecodesKnownBitPatterns) {
  EXPECT_EQ(bf16ToF32(0x3F80), 1.0f);
  EXPECT_EQ(bf16ToF32(0xC000), -2.0f);
  EXPECT_EQ(bf16ToF32(0x7F80), INFINITY);

  EXPECT_EQ(f16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(f16ToF32(0xC000), -2.0f);
  EXPECT_EQ(f16ToF32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16ToF32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(f16ToF32(0x7C00), INFINITY);
  EXPECT_EQ(f16ToF32(0xFC00), -INFINITY);
  EXPECT_TRUE(std::isnan(f16ToF32(0x7E00)));
  EXPECT_TRUE(std::signbit(f16ToF32(0x8000)));

  EXPECT_EQ(e4m3fnToF32(0x7E), 448.0f);
  EXPECT_EQ(e4m3fnToF32(0xFE), -448.0f);
  EXPECT_EQ(e4m3fnToF32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3fnToF32(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(e4m3fnToF32(0x38), 1.0f);
  EXPECT_EQ(e4m3fnToF32(0x78), 256.0f); // exponent all ones is finite in "fn"
  EXPECT_TRUE(std::isnan(e4m3fnToF32(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3fnToF32(0xFF)));

  EXPECT_EQ(e5m2ToF32(0x3C), 1.0f);
  EXPECT_EQ(e5m2ToF32(0x7B), 57344.0f);
  EXPECT_EQ(e5m2ToF32(0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(e5m2ToF32(0x7C), INFINITY);
  EXPECT_TRUE(std::isnan(e5m2ToF32(0x7F)));
}

TEST(Safetensors, ConvertsEveryDType) {
  TempDir tmp;
  std::string path = tmp.path("dtypes.safetensors");
  SafetensorsWriter w;
  double f64[] = {0.5, -1e300};
  w.addTensor("f64", DType::F64, {2}, f64, sizeof(f64));
  w.addTensor("f16", DType::F16, {2}, {0x00, 0x3C, 0x00, 0xC0}); // 1, -2
  w.addTensor("e4m3", DType::F8_E4M3, {3}, {0x7E, 0x01, 0x7F});
  w.addTensor("e5m2", DType::F8_E5M2, {2}, {0x3C, 0xBC});
  int32_t i32[] = {-5, 7};
  w.addTensor("i32", DType::I32, {2}, i32, sizeof(i32));
  int16_t i16[] = {-300, 300};
  w.addTensor("i16", DType::I16, {2}, i16, sizeof(i16));
  w.addTensor("i8", DType::I8, {2}, {0xFF, 0x05});
  w.addTensor("u8", DType::U8, {2}, {0xFF, 0x05});
  w.addTensor("bool", DType::BOOL, {1}, {1});
  ASSERT_EQ(errorText(w.write(path)), "");
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << file.error().message();
  auto get = [&](const char *name) { return *(*file)->lookup(name); };

  std::vector<float> wide = toF32(get("f64"));
  EXPECT_EQ(wide[0], 0.5f);
  EXPECT_EQ(wide[1], -INFINITY);
  EXPECT_EQ(toF32(get("f16")), (std::vector<float>{1.0f, -2.0f}));
  std::vector<float> e4m3 = toF32(get("e4m3"));
  EXPECT_EQ(e4m3[0], 448.0f);
  EXPECT_EQ(e4m3[1], std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(e4m3[2]));
  EXPECT_EQ(toF32(get("e5m2")), (std::vector<float>{1.0f, -1.0f}));
  EXPECT_EQ(toI64(get("i32")), (std::vector<int64_t>{-5, 7}));
  EXPECT_EQ(toI64(get("i16")), (std::vector<int64_t>{-300, 300}));
  EXPECT_EQ(toI64(get("i8")), (std::vector<int64_t>{-1, 5}));
  EXPECT_EQ(toI64(get("u8")), (std::vector<int64_t>{255, 5}));

  float f;
  int64_t i;
  EXPECT_EQ(errorText(convertToF32(get("i32"), &f)),
            path + ": tensor 'i32' has dtype I32, not a floating-point type");
  EXPECT_EQ(errorText(convertToI64(get("f16"), &i)),
            path + ": tensor 'f16' has dtype F16, not an integer type");
  EXPECT_NE(
      errorText(convertToI64(get("bool"), &i)).find("not an integer type"),
      std::string::npos);
  TensorInfo forged = get("f16");
  forged.nbytes = 400; // would read past the data
  EXPECT_NE(errorText(convertToF32(forged, &f)).find("does not match F16 [2]"),
            std::string::npos);
}

struct Malformed {
  const char *what;
  std::string bytes;
  std::string expected; // substring of the message after "<path>: "
};

/// Each case is written to one file and must fail to open, naming the file,
/// with `expected` in a one-line message.
void expectRejected(const std::vector<Malformed> &cases) {
  TempDir tmp;
  for (const Malformed &m : cases) {
    std::string path = tmp.write("bad.safetensors", m.bytes);
    std::string message = errorText(SafetensorsFile::open(path));
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << m.what << ": " << message;
    EXPECT_NE(message.find(m.expected), std::string::npos)
        << m.what << ": expected '" << m.expected << "' in: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(Safetensors, RejectsMalformedFiles) {
  const char *f32x4 = R"("dtype": "F32", "shape": [4])";
  expectRejected({
      {"truncated", "abcde",
       "file is 5 bytes, too short for the 8-byte header length"},
      {"header past end", rawFile("{}", 4, 1000),
       "header length 1000 exceeds the file size (14 bytes)"},
      {"header over limit", rawFile("{}", 0, 200000000),
       "header length 200000000 exceeds the limit"},
      {"bad JSON", rawFile("{not json", 0), "invalid header JSON"},
      {"not an object", rawFile("[1, 2]", 0), "header is not a JSON object"},
      {"entry not object", rawFile(R"({"a": 3})", 0),
       "tensor 'a' has a header entry that is not"},
      {"no dtype",
       rawFile(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4),
       "tensor 'a' needs 'dtype' to be a string"},
      {"unknown dtype",
       rawFile(
           R"({"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 4]}})",
           4),
       "tensor 'a' has unknown dtype \"F7\""},
      {"negative dim",
       rawFile(
           R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
           4),
       "tensor 'a' needs 'shape' to be an array of non-negative integers"},
      {"element overflow",
       rawFile(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296],
                         "data_offsets": [0, 4]}})",
               4),
       "tensor 'a' has shape [4294967296, 4294967296] with too many elements"},
      {"bad offsets",
       rawFile(R"({"a": {)" + std::string(f32x4) + R"(, "data_offsets": [0]}})",
               16),
       "tensor 'a' needs 'data_offsets' to be two non-negative integers"},
      {"out of range",
       rawFile(
           R"({"a.weight": {"dtype": "F32", "shape": [1024],
                            "data_offsets": [0, 4096]}})",
           1024),
       "tensor 'a.weight' data range [0, 4096) exceeds the data section (1024 "
       "bytes)"},
      {"begin after end",
       rawFile(R"({"a": {)" + std::string(f32x4) +
                   R"(, "data_offsets": [16, 0]}})",
               16),
       "tensor 'a' has data_offsets [16, 0) with begin after end"},
      {"size mismatch",
       rawFile(
           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}})",
           16),
       "tensor 'a' data range [0, 12) holds 12 bytes but F32 [2] needs 8"},
      {"overlap",
       rawFile(R"({"a": {)" + std::string(f32x4) +
                   R"(, "data_offsets": [0, 16]},
                   "b": {)" +
                   std::string(f32x4) + R"(, "data_offsets": [8, 24]}})",
               24),
       "tensors 'a' [0, 16) and 'b' [8, 24) overlap"},
      {"newline in name", rawFile(R"({"a\nb": 3})", 0),
       "tensor 'a b' has a header entry that is not an object"},
      {"bad metadata", rawFile(R"({"__metadata__": {"k": 1}})", 0),
       "'__metadata__' value of 'k' is not a string"},
  });
  TempDir tmp;
  // Empty tensors may share an offset with their neighbours.
  std::string empties = tmp.write(
      "empty.safetensors",
      rawFile(R"({"e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
                  "a": {"dtype": "F32", "shape": [4],
                        "data_offsets": [0, 16]}})",
              16));
  EXPECT_EQ(errorText(SafetensorsFile::open(empties)), "");

  EXPECT_EQ(errorText(SafetensorsFile::open(tmp.root)),
            tmp.root + ": is a directory, not a file");
  std::string missing = tmp.path("missing.safetensors");
  EXPECT_EQ(errorText(SafetensorsFile::open(missing))
                .rfind(missing + ": cannot open", 0),
            0u);
}

/// Writes one shard holding F32 tensors named after their single value.
void writeShard(const std::string &path,
                std::initializer_list<std::pair<const char *, float>> ts) {
  SafetensorsWriter w;
  for (auto [name, value] : ts)
    w.addF32(name, {1}, {value});
  ASSERT_EQ(errorText(w.write(path)), "");
}

TEST(Safetensors, ShardedIndex) {
  TempDir tmp;
  writeShard(tmp.path("s1.safetensors"), {{"a", 1.0f}, {"b", 2.0f}});
  writeShard(tmp.path("s2.safetensors"), {{"c", 3.0f}});
  std::string index = tmp.write("model.safetensors.index.json", R"({
    "metadata": {"total_size": 12},
    "weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",
                   "c": "s2.safetensors"}})");

  for (const std::string &location : {tmp.root, index}) {
    auto store = WeightStore::open(location);
    ASSERT_TRUE(bool(store)) << store.error().message();
    EXPECT_EQ((*store)->description(), location);
    EXPECT_EQ((*store)->names(), (std::vector<std::string>{"a", "b", "c"}));
    const TensorInfo *c = (*store)->lookup("c");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->file, tmp.path("s2.safetensors"));
    EXPECT_EQ(toF32(*c), (std::vector<float>{3.0f}));
    EXPECT_EQ(toF32(*(*store)->lookup("a")), (std::vector<float>{1.0f}));
    EXPECT_EQ((*store)->lookup("d"), nullptr);
  }

  tmp.write(
      "model.safetensors.index.json",
      R"({"weight_map": {"a": "s1.safetensors", "d": "s3.safetensors"}})");
  EXPECT_EQ(errorText(WeightStore::open(tmp.root)),
            index + ": shard '" + tmp.path("s3.safetensors") +
                "' (holding 'd') does not exist");
  tmp.write("model.safetensors.index.json",
            R"({"weight_map": {"z": "s1.safetensors"}})");
  EXPECT_EQ(errorText(WeightStore::open(tmp.root)),
            index + ": tensor 'z' is mapped to shard 's1.safetensors', which "
                    "does not contain it");
  tmp.write("model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_EQ(errorText(WeightStore::open(tmp.root)),
            index + ": missing 'weight_map' object");
  tmp.write("model.safetensors.index.json", R"({"weight_map": {"a": 1}})");
  EXPECT_EQ(errorText(WeightStore::open(tmp.root)),
            index + ": 'weight_map' entry for 'a' is not a string");
}

TEST(Safetensors, DirectoryOfFiles) {
  TempDir tmp;
  EXPECT_NE(errorText(WeightStore::open(tmp.root)).find("no model.safetensors"),
            std::string::npos);
  writeShard(tmp.path("x.safetensors"), {{"a", 1.0f}});
  writeShard(tmp.path("y.safetensors"), {{"b", 2.0f}});
  {
    auto store = WeightStore::open(tmp.root);
    ASSERT_TRUE(bool(store)) << store.error().message();
    EXPECT_EQ((*store)->names(), (std::vector<std::string>{"a", "b"}));
  }
  writeShard(tmp.path("z.safetensors"), {{"a", 5.0f}});
  EXPECT_EQ(errorText(WeightStore::open(tmp.root)),
            tmp.root + ": tensor 'a' appears in both " +
                tmp.path("x.safetensors") + " and " +
                tmp.path("z.safetensors"));
  // model.safetensors wins over the other files.
  writeShard(tmp.path("model.safetensors"), {{"m", 4.0f}});
  auto store = WeightStore::open(tmp.root);
  ASSERT_TRUE(bool(store)) << store.error().message();
  EXPECT_EQ((*store)->names(), (std::vector<std::string>{"m"}));
}

TEST(Safetensors, TinyCheckpoint) {
  std::string path = sourcePath("models/tiny/model.safetensors");
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << file.error().message();
  EXPECT_EQ((*file)->tensors().size(), 205u);
  auto store = WeightStore::open(sourcePath("models/tiny"));
  ASSERT_TRUE(bool(store)) << store.error().message();
  EXPECT_EQ((*store)->names().size(), 205u);
  const TensorInfo *kv =
      (*store)->lookup("model.layers.0.self_attn.kv_a_proj_with_mqa.weight");
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->dtype, DType::F32);
  EXPECT_EQ(kv->shape, (std::vector<int64_t>{80, 256}));
  EXPECT_EQ(kv->nbytes, 80u * 256u * 4u);
  std::vector<float> values = toF32(*kv);
  EXPECT_TRUE(std::all_of(values.begin(), values.end(),
                          [](float v) { return std::isfinite(v); }));
  EXPECT_TRUE(std::any_of(values.begin(), values.end(),
                          [](float v) { return v != 0.0f; }));
}

//===----------------------------------------------------------------------===//
// New code paths: nlohmann/json, mapped files, durable writes
//===----------------------------------------------------------------------===//

TEST(Safetensors, RejectsMoreMalformedHeaders) {
  const char *f32x1 = R"("dtype": "F32", "shape": [1])";
  expectRejected({
      {"not JSON at all", rawFile("hello, world", 0),
       "invalid header JSON: parse error at line 1, column 1"},
      {"JSON cut short", rawFile(R"({"a": {"dtype": "F3)", 0),
       "invalid header JSON: parse error"},
      {"text after the object", rawFile("{} {}", 0), "invalid header JSON"},
      {"empty header", rawFile("", 0), "invalid header JSON"},
      {"NUL padding", rawFile(std::string("{}\0\0", 4), 0),
       "invalid header JSON: unexpected NUL byte at offset 2"},
      {"byte order mark", rawFile("\xEF\xBB\xBF{}", 0),
       "invalid header JSON: unexpected byte order mark"},
      {"invalid UTF-8", rawFile("{\"\xff\": 1}", 0), "invalid header JSON"},
      {"metadata not an object", rawFile(R"({"__metadata__": [1]})", 0),
       "'__metadata__' is not an object"},
      {"dtype not a string",
       rawFile(R"({"a": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})",
               4),
       "tensor 'a' needs 'dtype' to be a string"},
      {"shape not an array",
       rawFile(R"({"a": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})",
               4),
       "tensor 'a' needs 'shape' to be an array of non-negative integers"},
      {"fractional dim",
       rawFile(
           R"({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})",
           4),
       "tensor 'a' needs 'shape' to be an array of non-negative integers"},
      {"dim past int64",
       rawFile(R"({"a": {"dtype": "U8", "shape": [9223372036854775808],
                         "data_offsets": [0, 4]}})",
               4),
       "tensor 'a' needs 'shape' to be an array of non-negative integers"},
      {"offsets written as floats",
       rawFile(R"({"a": {)" + std::string(f32x1) +
                   R"(, "data_offsets": [0.0, 4.0]}})",
               4),
       "tensor 'a' needs 'data_offsets' to be two non-negative integers"},
      {"negative offset",
       rawFile(R"({"a": {)" + std::string(f32x1) +
                   R"(, "data_offsets": [-4, 0]}})",
               4),
       "tensor 'a' needs 'data_offsets' to be two non-negative integers"},
      {"three offsets",
       rawFile(R"({"a": {)" + std::string(f32x1) +
                   R"(, "data_offsets": [0, 4, 8]}})",
               8),
       "tensor 'a' needs 'data_offsets' to be two non-negative integers"},
      {"overlap past an empty tensor",
       rawFile(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                   "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                   "b": {)" +
                   std::string(f32x1) + R"(, "data_offsets": [12, 16]}})",
               16),
       "tensors 'a' [0, 16) and 'b' [12, 16) overlap"},
  });
}

TEST(Safetensors, AcceptsIntegralFloatDims) {
  // llvm::json read 4.0 as the integer 4 in a shape; so does this reader.
  TempDir tmp;
  std::string path = tmp.write(
      "f.safetensors",
      rawFile(R"({"a": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}})",
              16));
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << file.error().message();
  EXPECT_EQ((*file)->lookup("a")->shape, (std::vector<int64_t>{4}));
}

TEST(Safetensors, RejectsTruncatedFiles) {
  TempDir tmp;
  std::string path = tmp.path("t.safetensors");
  SafetensorsWriter w;
  w.addF32("a", {4}, {1, 2, 3, 4});
  w.addF32("b", {2}, {5, 6});
  ASSERT_EQ(errorText(w.write(path)), "");
  std::string full = readAll(path);
  // Losing the last byte of data.
  std::string cut = tmp.write("cut.safetensors", full.substr(0, full.size() - 1));
  EXPECT_EQ(errorText(SafetensorsFile::open(cut)),
            cut + ": tensor 'b' data range [16, 24) exceeds the data section "
                  "(23 bytes)");
  // Losing the end of the header.
  std::string header = tmp.write("header.safetensors", full.substr(0, 20));
  EXPECT_EQ(errorText(SafetensorsFile::open(header)).rfind(
                header + ": header length ", 0),
            0u);
  // Only the length is left.
  std::string bare = tmp.write("bare.safetensors", full.substr(0, 8));
  EXPECT_NE(errorText(SafetensorsFile::open(bare)).find("exceeds the file size"),
            std::string::npos);
  std::string empty = tmp.write("empty.safetensors", "");
  EXPECT_EQ(errorText(SafetensorsFile::open(empty)),
            empty + ": file is 0 bytes, too short for the 8-byte header length");
}

TEST(Safetensors, WriterHeaderLayout) {
  TempDir tmp;
  std::string path = tmp.path("layout.safetensors");
  SafetensorsWriter w;
  // Added out of name order: the data keeps the add order, the header JSON
  // has sorted keys (as llvm::json printed them).
  w.addF32("z", {1}, {1.0f});
  w.addI64("a", {1}, {7});
  w.setMetadata("format", "pt");
  ASSERT_EQ(errorText(w.write(path)), "");
  std::string raw = readAll(path);
  std::string json =
      R"({"__metadata__":{"format":"pt"},)"
      R"("a":{"data_offsets":[4,12],"dtype":"I64","shape":[1]},)"
      R"("z":{"data_offsets":[0,4],"dtype":"F32","shape":[1]}})";
  std::string padded = json + std::string((8 - json.size() % 8) % 8, ' ');
  float one = 1.0f;
  int64_t seven = 7;
  std::string expected = le64(padded.size()) + padded +
                         std::string(reinterpret_cast<char *>(&one), 4) +
                         std::string(reinterpret_cast<char *>(&seven), 8);
  EXPECT_EQ(raw, expected);

  // No metadata: no "__metadata__" key; an empty writer still makes a file.
  SafetensorsWriter empty;
  std::string emptyPath = tmp.path("empty.safetensors");
  ASSERT_EQ(errorText(empty.write(emptyPath)), "");
  EXPECT_EQ(readAll(emptyPath), le64(8) + "{}      ");
  auto file = SafetensorsFile::open(emptyPath);
  ASSERT_TRUE(bool(file)) << file.error().message();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_TRUE((*file)->metadata().empty());
}

TEST(Safetensors, WriterPointerOverloadsAndNames) {
  TempDir tmp;
  std::string path = tmp.path("p.safetensors");
  std::vector<float> buffer = {0, 1, 2, 3, 4, 5};
  int64_t ids[] = {9, 8, 7};
  SafetensorsWriter w;
  w.addF32("tail", {2, 2}, buffer.data() + 2, 4); // a slice of a buffer
  w.addI64("ids", {3}, ids, 3);
  w.addTensor("none", DType::F32, {0}, nullptr, 0);
  w.addF32("name with \"quotes\" and \xc3\xa9", {1}, {1.0f});
  ASSERT_EQ(errorText(w.write(path)), "");
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << file.error().message();
  EXPECT_EQ(toF32(*(*file)->lookup("tail")),
            (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(toI64(*(*file)->lookup("ids")), (std::vector<int64_t>{9, 8, 7}));
  EXPECT_EQ((*file)->lookup("none")->nbytes, 0u);
  EXPECT_EQ(toF32(*(*file)->lookup("none")), std::vector<float>{});
  EXPECT_NE((*file)->lookup("name with \"quotes\" and \xc3\xa9"), nullptr);

  SafetensorsWriter reserved;
  reserved.addF32("__metadata__", {1}, {1.0f});
  EXPECT_EQ(errorText(reserved.write(path)),
            path + ": tensor name '__metadata__' is reserved");
  SafetensorsWriter badName;
  badName.addF32("a\xff", {1}, {1.0f});
  EXPECT_EQ(errorText(badName.write(path)),
            path + ": tensor 'a\xff' has a name that is not valid UTF-8");
  SafetensorsWriter badMeta;
  badMeta.setMetadata("k", "\xc0\x80"); // overlong NUL
  EXPECT_EQ(errorText(badMeta.write(path)),
            path + ": '__metadata__' value of 'k' is not valid UTF-8");
  // The failed writes left the earlier file alone and no temporary behind.
  EXPECT_EQ(tmp.list(), (std::vector<std::string>{"p.safetensors"}));
  EXPECT_TRUE(bool(SafetensorsFile::open(path)));
}

TEST(Safetensors, IndexErrors) {
  TempDir tmp;
  std::string index = tmp.write("model.safetensors.index.json", "{oops");
  std::string message = errorText(WeightStore::open(tmp.root));
  EXPECT_EQ(message.rfind(index + ": invalid JSON: parse error", 0), 0u)
      << message;
  tmp.write("model.safetensors.index.json", R"({"weight_map": {}})");
  EXPECT_EQ(errorText(WeightStore::open(index)),
            index + ": 'weight_map' is empty");
  tmp.write("model.safetensors.index.json", R"({"weight_map": []})");
  EXPECT_EQ(errorText(WeightStore::open(index)),
            index + ": missing 'weight_map' object");
  tmp.write("model.safetensors.index.json", R"(["weight_map"])");
  EXPECT_EQ(errorText(WeightStore::open(index)),
            index + ": missing 'weight_map' object");
  // A bad shard reports its own path.
  std::string shard = tmp.write("s.safetensors", "abc");
  tmp.write("model.safetensors.index.json",
            R"({"weight_map": {"a": "s.safetensors"}})");
  EXPECT_EQ(errorText(WeightStore::open(tmp.root)),
            shard + ": file is 3 bytes, too short for the 8-byte header length");
  std::string missing = tmp.path("nothing.safetensors");
  EXPECT_EQ(errorText(WeightStore::open(missing)),
            missing + ": cannot open: No such file or directory");
}

TEST(File, MapsRegularFilesOnly) {
  TempDir tmp;
  std::string path = tmp.write("f.bin", "hello");
  {
    auto mapped = mapInputFile(path, 100);
    ASSERT_TRUE(bool(mapped)) << mapped.error().message();
    EXPECT_EQ(mapped->size(), 5u);
    EXPECT_EQ(mapped->text(), "hello");
    MappedFile moved = std::move(*mapped);
    EXPECT_EQ(moved.text(), "hello");
    EXPECT_EQ(mapped->size(), 0u);
    MappedFile assigned;
    assigned = std::move(moved);
    EXPECT_EQ(std::string(reinterpret_cast<const char *>(assigned.data()), 5),
              "hello");
  }
  auto empty = mapInputFile(tmp.write("empty.bin", ""), 100);
  ASSERT_TRUE(bool(empty)) << empty.error().message();
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_NE(empty->data(), nullptr);

  EXPECT_EQ(errorText(mapInputFile(path, 4)),
            path + ": is 5 bytes, more than the limit of 4");
  EXPECT_EQ(errorText(mapInputFile(tmp.root, 100)),
            tmp.root + ": is a directory, not a file");
  std::string missing = tmp.path("missing");
  EXPECT_EQ(errorText(mapInputFile(missing, 100)),
            missing + ": cannot open: No such file or directory");
  // A FIFO would block an open() for reading: refused without opening it.
  std::string fifo = tmp.path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  EXPECT_EQ(errorText(mapInputFile(fifo, 100)),
            fifo + ": is not a regular file");
  EXPECT_EQ(errorText(mapInputFile("/dev/null", 100)),
            "/dev/null: is not a regular file");
  // Through a symbolic link, the target counts.
  std::string link = tmp.path("link");
  ASSERT_EQ(::symlink(path.c_str(), link.c_str()), 0);
  EXPECT_EQ(errorText(mapInputFile(link, 100)), "");
  if (::geteuid() != 0) { // root reads anything
    std::string secret = tmp.write("secret", "x");
    ASSERT_EQ(::chmod(secret.c_str(), 0), 0);
    EXPECT_EQ(errorText(mapInputFile(secret, 100)),
              secret + ": cannot read: Permission denied");
  }
}

TEST(File, WritesDurablyAndAtomically) {
  TempDir tmp;
  std::string path = tmp.path("out.txt");
  ASSERT_EQ(errorText(writeFileDurably(path, "first", 5)), "");
  EXPECT_EQ(readAll(path), "first");
  std::string a = "sec", b = "ond";
  ASSERT_EQ(errorText(writeFileDurably(
                path, {{a.data(), a.size()}, {nullptr, 0}, {b.data(), b.size()}})),
            "");
  EXPECT_EQ(readAll(path), "second");
  ASSERT_EQ(errorText(writeFileDurably(path, nullptr, 0)), "");
  EXPECT_EQ(readAll(path), "");
  EXPECT_EQ(tmp.list(), (std::vector<std::string>{"out.txt"}));

  std::string tmpName = ".tmp." + std::to_string(::getpid());
  std::string noDir = tmp.path("missing/out.txt");
  EXPECT_EQ(errorText(writeFileDurably(noDir, "x", 1)),
            noDir + tmpName + ": cannot create: No such file or directory");
  // The rename fails (a directory is in the way): the temporary goes away.
  std::string dir = tmp.path("dir");
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(errorText(writeFileDurably(dir + "/inner", "x", 1)), "");
  EXPECT_EQ(errorText(writeFileDurably(dir, "x", 1)),
            dir + ": cannot rename " + dir + tmpName +
                " into place: Is a directory");
  EXPECT_EQ(tmp.list(), (std::vector<std::string>{"dir", "out.txt"}));
  // A bare name lands in the working directory (whose sync must work too).
  std::string cwd = fs::current_path().string();
  ASSERT_EQ(::chdir(tmp.root.c_str()), 0);
  Error bare = writeFileDurably("bare.txt", "b", 1);
  ASSERT_EQ(::chdir(cwd.c_str()), 0);
  EXPECT_EQ(errorText(bare), "");
  EXPECT_EQ(readAll(tmp.path("bare.txt")), "b");
}

} // namespace
