//===- SafetensorsTest.cpp - safetensors reader, writer, shards, dtypes ---===//
//
// Round trips through the writer, decodes known bit patterns, rejects each
// kind of malformed file, resolves sharded checkpoints, and opens the bundled
// tiny checkpoint.
//
//===----------------------------------------------------------------------===//
#include "frontends/model/Safetensors.h"
#include "tests/unit/model/TestSupport.h"

#include "llvm/Support/Endian.h"

#include <cmath>
#include <cstring>

using namespace dsv3;
using namespace dsv3::test;

namespace {

/// A raw file: 8-byte little-endian header length, header, zeroed data.
std::string rawFile(llvm::StringRef header, size_t dataBytes,
                    uint64_t declaredLength) {
  std::string bytes(8, '\0');
  llvm::support::endian::write64le(bytes.data(), declaredLength);
  return bytes + header.str() + std::string(dataBytes, '\0');
}
std::string rawFile(llvm::StringRef header, size_t dataBytes) {
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

  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(tmp.root, ec), end;
       !ec && it != end; it.increment(ec))
    EXPECT_EQ(llvm::sys::path::filename(it->path()), "w.safetensors")
        << "left behind";
  uint64_t size = 0;
  ASSERT_FALSE(llvm::sys::fs::file_size(path, size));
  auto raw = llvm::MemoryBuffer::getFile(path);
  ASSERT_TRUE(bool(raw));
  uint64_t headerLen =
      llvm::support::endian::read64le((*raw)->getBufferStart());
  EXPECT_EQ(headerLen % 8, 0u);
  EXPECT_EQ(size, 8 + headerLen + 24 + 4 + 24 + 4);

  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
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
  EXPECT_FALSE(llvm::sys::fs::exists(path));
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
  w.addTensor("f64", DType::F64, {2},
              {reinterpret_cast<uint8_t *>(f64), sizeof(f64)});
  w.addTensor("f16", DType::F16, {2}, {0x00, 0x3C, 0x00, 0xC0}); // 1, -2
  w.addTensor("e4m3", DType::F8_E4M3, {3}, {0x7E, 0x01, 0x7F});
  w.addTensor("e5m2", DType::F8_E5M2, {2}, {0x3C, 0xBC});
  int32_t i32[] = {-5, 7};
  w.addTensor("i32", DType::I32, {2},
              {reinterpret_cast<uint8_t *>(i32), sizeof(i32)});
  int16_t i16[] = {-300, 300};
  w.addTensor("i16", DType::I16, {2},
              {reinterpret_cast<uint8_t *>(i16), sizeof(i16)});
  w.addTensor("i8", DType::I8, {2}, {0xFF, 0x05});
  w.addTensor("u8", DType::U8, {2}, {0xFF, 0x05});
  w.addTensor("bool", DType::BOOL, {1}, {1});
  ASSERT_EQ(errorText(w.write(path)), "");
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  auto get = [&](llvm::StringRef name) { return *(*file)->lookup(name); };

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

TEST(Safetensors, RejectsMalformedFiles) {
  const char *f32x4 = R"("dtype": "F32", "shape": [4])";
  std::vector<Malformed> cases = {
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
  };
  TempDir tmp;
  for (const Malformed &m : cases) {
    std::string path = tmp.write("bad.safetensors", m.bytes);
    std::string message = errorText(SafetensorsFile::open(path));
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << m.what << ": " << message;
    EXPECT_NE(message.find(m.expected), std::string::npos)
        << m.what << ": expected '" << m.expected << "' in: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
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
    ASSERT_TRUE(bool(store)) << llvm::toString(store.takeError());
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
    ASSERT_TRUE(bool(store)) << llvm::toString(store.takeError());
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
  ASSERT_TRUE(bool(store)) << llvm::toString(store.takeError());
  EXPECT_EQ((*store)->names(), (std::vector<std::string>{"m"}));
}

TEST(Safetensors, TinyCheckpoint) {
  std::string path = sourcePath("models/tiny/model.safetensors");
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  EXPECT_EQ((*file)->tensors().size(), 205u);
  auto store = WeightStore::open(sourcePath("models/tiny"));
  ASSERT_TRUE(bool(store)) << llvm::toString(store.takeError());
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

} // namespace
