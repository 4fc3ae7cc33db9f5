//===- Tokenizer.cpp - Hugging Face byte-level BPE tokenizers -------------===//
//
// Part of the runtime core: plain C++17, nlohmann/json and PCRE2, no LLVM.
// Encoding follows `tokenizers`' pipeline: added tokens are split out of the
// text first (leftmost-longest), each remaining piece goes through the
// pre-tokenizer's regex Splits (matches and gaps both kept), is mapped to
// GPT-2's printable byte alphabet and merged by BPE, lowest merge rank first.
// PCRE2 with UTF and UCP stands in for Oniguruma, which `tokenizers` uses.
//
//===----------------------------------------------------------------------===//
#include "runtime/text/Tokenizer.h"

#include "runtime/support/File.h"

#include <nlohmann/json.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8 // the UTF-8 API
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <functional>
#include <mutex>
#include <queue>
#include <sys/stat.h>
#include <unordered_map>

namespace dsv3::rt {

using nlohmann::json;

namespace {

//===----------------------------------------------------------------------===//
// UTF-8
//===----------------------------------------------------------------------===//

/// UTF-8 of a code point below U+0800 (all the byte-level alphabet needs).
std::string twoByteUtf8(uint32_t cp) {
  if (cp < 0x80)
    return std::string(1, char(cp));
  return {char(0xC0 | cp >> 6), char(0x80 | (cp & 0x3F))};
}

/// Reads the code point at `i` of valid UTF-8 and moves past it.
uint32_t nextCodePoint(std::string_view s, size_t &i) {
  auto byte = [&](size_t k) { return uint32_t(uint8_t(s[k])); };
  uint32_t lead = byte(i);
  int extra = lead < 0x80 ? 0 : lead < 0xE0 ? 1 : lead < 0xF0 ? 2 : 3;
  uint32_t cp = extra == 0 ? lead : lead & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k)
    cp = cp << 6 | (byte(i + k) & 0x3F);
  i += extra + 1;
  return cp;
}

/// Appends the valid UTF-8 of `bytes` to `out`, each maximal ill-formed
/// subsequence replaced by one U+FFFD (Unicode's recommended practice, which
/// Rust's from_utf8_lossy and Python follow). Unless `final`, an incomplete
/// character at the end is left unconsumed. Returns the bytes consumed.
size_t appendLossyUtf8(std::string &out, std::string_view bytes, bool final) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  size_t i = 0, n = bytes.size();
  while (i < n) {
    uint8_t lead = uint8_t(bytes[i]);
    if (lead < 0x80) {
      out += char(lead);
      ++i;
      continue;
    }
    if (lead < 0xC2 || lead > 0xF4) { // never starts a character
      out += kReplacement;
      ++i;
      continue;
    }
    // Length and the allowed range of the second byte (Unicode table 3-7).
    int length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    uint8_t low = lead == 0xE0 ? 0xA0 : lead == 0xF0 ? 0x90 : 0x80;
    uint8_t high = lead == 0xED ? 0x9F : lead == 0xF4 ? 0x8F : 0xBF;
    int good = 1;
    while (good < length && i + good < n) {
      uint8_t b = uint8_t(bytes[i + good]);
      if (good == 1 ? (b < low || b > high) : (b < 0x80 || b > 0xBF))
        break;
      ++good;
    }
    if (good == length) {
      out.append(bytes.data() + i, length);
    } else if (i + good == n && !final) {
      break; // may still be completed by the next bytes
    } else {
      out += kReplacement;
    }
    i += good;
  }
  return i;
}

//===----------------------------------------------------------------------===//
// GPT-2's byte-level alphabet
//===----------------------------------------------------------------------===//

/// Every byte as a printable character: printable Latin-1 bytes stand for
/// themselves, the others for U+0100 on in byte order.
struct ByteLevelAlphabet {
  std::array<std::string, 256> charOfByte;
  std::unordered_map<uint32_t, uint8_t> byteOfChar;
};

const ByteLevelAlphabet &byteLevelAlphabet() {
  static const ByteLevelAlphabet alphabet = [] {
    ByteLevelAlphabet a;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      uint32_t cp = printable ? b : next++;
      a.charOfByte[b] = twoByteUtf8(cp);
      a.byteOfChar[cp] = uint8_t(b);
    }
    return a;
  }();
  return alphabet;
}

/// The bytes a token stands for, as the ByteLevel decoder computes them: a
/// token made only of byte-level characters maps back to those bytes; any
/// other (an added token such as "<｜User｜>") stands for its own UTF-8.
std::string byteLevelBytes(std::string_view token) {
  const ByteLevelAlphabet &alphabet = byteLevelAlphabet();
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    auto it = alphabet.byteOfChar.find(nextCodePoint(token, i));
    if (it == alphabet.byteOfChar.end())
      return std::string(token);
    bytes += char(it->second);
  }
  return bytes;
}

//===----------------------------------------------------------------------===//
// JSON helpers
//===----------------------------------------------------------------------===//

/// nlohmann's message without its "[json.exception.parse_error.101] " tag.
std::string describe(const json::exception &e) {
  std::string why = e.what();
  size_t tagEnd = why.find("] ");
  return why.rfind("[json.exception.", 0) == 0 && tagEnd != std::string::npos
             ? why.substr(tagEnd + 2)
             : why;
}

Error readJson(const std::string &path, json &out) {
  Expected<MappedFile> file = mapInputFile(path, uint64_t(1) << 31);
  if (!file)
    return file.takeError();
  try {
    out = json::parse(file->text());
  } catch (const json::exception &e) {
    return fileError(path, "invalid JSON: " + describe(e));
  }
  return Error::success();
}

/// An object's "type" ("none" for null, "" when it has none).
std::string typeOf(const json &j) {
  if (j.is_null())
    return "none";
  auto it = j.is_object() ? j.find("type") : j.end();
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool isTrue(const json &object, const char *key) {
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

/// Null, absent or the empty string.
bool isUnset(const json &object, const char *key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ||
         (it->is_string() && it->get<std::string>().empty());
}

/// A token given as a string or as an AddedToken object {"content": ...}.
std::string tokenContent(const json &j) {
  if (j.is_string())
    return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return "";
}

bool isRegularFile(const std::string &path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

/// Ids from here on are refused (the decoding tables are dense).
constexpr int64_t kMaxVocabulary = int64_t(1) << 24;

/// The pre-tokenizer of ByteLevel with use_regex (GPT-2's).
const char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";

using Regex = std::shared_ptr<const pcre2_code>;
using MatchData =
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data *)>;

} // namespace

//===----------------------------------------------------------------------===//
// The tables
//===----------------------------------------------------------------------===//

struct TokenizerState {
  std::string directory, chatTemplate, chatTemplateFile, bosText, eosText;
  bool addBos = false;

  // The BPE model.
  std::unordered_map<std::string, int64_t> vocab; // byte-level strings
  struct Merge {
    int32_t rank;
    int64_t result;
  };
  std::unordered_map<uint64_t, Merge> merges; // (left id, right id) -> merge
  bool ignoreMerges = false;

  // Added tokens, bucketed by first byte, longest first; [0] holds those
  // matched on the raw text, [1] the `normalized` ones (matched after the
  // raw ones, as `tokenizers` does; the normalizer is the identity here).
  struct AddedToken {
    std::string content;
    int64_t id;
  };
  std::array<std::array<std::vector<AddedToken>, 256>, 2> addedByFirstByte;
  std::unordered_map<std::string, int64_t> addedIds;

  std::vector<Regex> splits;                 // Isolated Splits, in order
  std::vector<int64_t> prefixIds, suffixIds; // around the sequence
  std::vector<std::string> bytesOfId;        // for decoding
  std::vector<uint8_t> hasId, specialId;
  std::optional<int64_t> bos, eos;

  // Per-piece BPE results (pieces repeat a lot in text).
  mutable std::mutex cacheMutex;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  std::optional<int64_t> idOf(std::string_view text) const {
    std::string key(text);
    if (auto it = addedIds.find(key); it != addedIds.end())
      return it->second;
    if (auto it = vocab.find(key); it != vocab.end())
      return it->second;
    return std::nullopt;
  }
};

//===----------------------------------------------------------------------===//
// Loading
//===----------------------------------------------------------------------===//

namespace {

using State = TokenizerState;

Expected<Regex> compileRegex(const std::string &pattern, uint32_t options,
                             const std::string &path) {
  int code = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code *compiled = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
      PCRE2_UTF | PCRE2_UCP | options, &code, &offset, nullptr);
  if (!compiled) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(code, message, sizeof message);
    return fileError(path, "pre_tokenizer regex '" + pattern + "' at offset " +
                               std::to_string(offset) + ": " +
                               reinterpret_cast<const char *>(message));
  }
  pcre2_jit_compile(compiled, PCRE2_JIT_COMPLETE); // an optional speed-up
  return Regex(compiled, [](const pcre2_code *c) {
    pcre2_code_free(const_cast<pcre2_code *>(c));
  });
}

/// Collects the pre-tokenizer's Splits; it must end in ByteLevel.
Error parsePreTokenizer(const json &node, State &s, bool &sawByteLevel,
                        const std::string &path) {
  std::string type = typeOf(node);
  if (sawByteLevel)
    return fileError(path, "pre_tokenizer '" + type +
                               "' after ByteLevel is not supported");
  if (type == "Sequence") {
    for (const json &step : node.at("pretokenizers"))
      if (Error err = parsePreTokenizer(step, s, sawByteLevel, path))
        return err;
    return Error::success();
  }
  if (type == "Split") {
    if (node.value("behavior", "") != "Isolated" || isTrue(node, "invert"))
      return fileError(
          path,
          "pre_tokenizer Split supports only behavior Isolated without invert");
    const json &pattern = node.at("pattern");
    bool literal = pattern.contains("String");
    Expected<Regex> regex = compileRegex(
        pattern.at(literal ? "String" : "Regex").get<std::string>(),
        literal ? PCRE2_LITERAL : 0, path);
    if (!regex)
      return regex.takeError();
    s.splits.push_back(*regex);
    return Error::success();
  }
  if (type == "ByteLevel") {
    if (isTrue(node, "add_prefix_space"))
      return fileError(
          path,
          "pre_tokenizer ByteLevel with add_prefix_space is not supported");
    if (node.value("use_regex", true)) {
      Expected<Regex> regex = compileRegex(kGpt2Pattern, 0, path);
      if (!regex)
        return regex.takeError();
      s.splits.push_back(*regex);
    }
    sawByteLevel = true;
    return Error::success();
  }
  return fileError(path, "unsupported pre_tokenizer '" + type + "'");
}

/// Only normalizers that change nothing: null or a Sequence of those.
bool isIdentityNormalizer(const json &node) {
  if (node.is_null())
    return true;
  if (typeOf(node) != "Sequence" || !node.contains("normalizers"))
    return false;
  for (const json &step : node["normalizers"])
    if (!isIdentityNormalizer(step))
      return false;
  return true;
}

Error parseModel(const json &model, State &s, const std::string &path) {
  std::string type = typeOf(model);
  if (type != "BPE")
    return fileError(path, "unsupported model type '" + type + "' (only BPE)");
  if (isTrue(model, "byte_fallback"))
    return fileError(path, "BPE byte_fallback is not supported");
  if (!isUnset(model, "continuing_subword_prefix") ||
      !isUnset(model, "end_of_word_suffix"))
    return fileError(
        path,
        "BPE continuing_subword_prefix/end_of_word_suffix are not supported");
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      model["dropout"].get<double>() != 0)
    return fileError(path, "BPE dropout is not supported");
  // DeepSeek-V3 has none: byte-level BPE can spell every input.
  if (!isUnset(model, "unk_token"))
    return fileError(path, "BPE unk_token is not supported");
  s.ignoreMerges = isTrue(model, "ignore_merges");

  for (const auto &[token, id] : model.at("vocab").items()) {
    int64_t value = id.get<int64_t>();
    if (value < 0 || value >= kMaxVocabulary)
      return fileError(path, "vocab id " + std::to_string(value) + " of '" +
                                 token + "' out of range");
    s.vocab[token] = value;
  }

  int32_t rank = 0;
  for (const json &merge : model.at("merges")) {
    // "left right" (older files) or ["left", "right"].
    std::string left, right;
    if (merge.is_string()) {
      std::string text = merge.get<std::string>();
      size_t space = text.find(' ');
      if (space == std::string::npos ||
          text.find(' ', space + 1) != std::string::npos)
        return fileError(path, "merge '" + text + "' is not two tokens");
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return fileError(path, "merge " + std::to_string(rank) +
                                 " is not a pair of tokens");
    }
    auto l = s.vocab.find(left), r = s.vocab.find(right),
         m = s.vocab.find(left + right);
    if (l == s.vocab.end() || r == s.vocab.end() || m == s.vocab.end())
      return fileError(path, "merge '" + left + " " + right +
                                 "' uses a token not in the vocab");
    // A repeated pair keeps its last rank, as in `tokenizers`' merge map.
    s.merges[uint64_t(l->second) << 32 | uint64_t(r->second)] =
        State::Merge{rank, m->second};
    ++rank;
  }
  return Error::success();
}

Error parseTemplateProcessing(const json &node, State &s,
                              const std::string &path) {
  bool sawSequence = false;
  for (const json &item : node.at("single")) {
    if (item.contains("Sequence")) {
      if (item["Sequence"].at("id") != "A")
        return fileError(path,
                         "post_processor: single template uses sequence B");
      sawSequence = true;
    } else if (item.contains("SpecialToken")) {
      std::string name = item["SpecialToken"].at("id").get<std::string>();
      const json &special = node.at("special_tokens");
      if (!special.contains(name))
        return fileError(path, "post_processor: special token '" + name +
                                   "' is not defined");
      for (const json &id : special[name].at("ids"))
        (sawSequence ? s.suffixIds : s.prefixIds).push_back(id.get<int64_t>());
    } else {
      return fileError(path,
                       "post_processor: unknown template item " + item.dump());
    }
  }
  return Error::success();
}

Error parseTokenizerJson(const json &root, State &s, const std::string &path) {
  if (!root.is_object())
    return fileError(path, "not a JSON object");
  if (!root.contains("model"))
    return fileError(path, "no 'model'");
  if (Error err = parseModel(root["model"], s, path))
    return err;

  if (!isIdentityNormalizer(root.value("normalizer", json())))
    return fileError(path, "unsupported normalizer '" +
                               typeOf(root.at("normalizer")) + "'");
  if (!root.value("truncation", json()).is_null())
    return fileError(path, "truncation is not supported");

  bool sawByteLevel = false;
  if (Error err = parsePreTokenizer(root.value("pre_tokenizer", json()), s,
                                    sawByteLevel, path))
    return err;
  if (!sawByteLevel)
    return fileError(path, "pre_tokenizer without ByteLevel is not supported");

  const json processor = root.value("post_processor", json());
  std::string processorType = typeOf(processor);
  if (processorType == "TemplateProcessing") {
    if (Error err = parseTemplateProcessing(processor, s, path))
      return err;
  } else if (processorType != "none" &&
             processorType != "ByteLevel") { // ByteLevel: offsets only
    return fileError(path,
                     "unsupported post_processor '" + processorType + "'");
  }
  std::string decoderType = typeOf(root.value("decoder", json()));
  if (decoderType != "ByteLevel")
    return fileError(path, "unsupported decoder '" + decoderType +
                               "' (only ByteLevel)");

  // Decoding tables: the model's tokens, then the added ones over them.
  int64_t size = 0;
  for (const auto &[token, id] : s.vocab)
    size = std::max(size, id + 1);
  const json &added = root.value("added_tokens", json::array());
  for (const json &token : added) {
    int64_t id = token.at("id").get<int64_t>();
    if (id < 0 || id >= kMaxVocabulary)
      return fileError(path, "added token id " + std::to_string(id) +
                                 " out of range");
    size = std::max(size, id + 1);
  }
  s.bytesOfId.assign(size, "");
  s.hasId.assign(size, 0);
  s.specialId.assign(size, 0);
  for (const auto &[token, id] : s.vocab) {
    s.bytesOfId[id] = byteLevelBytes(token);
    s.hasId[id] = 1;
  }
  for (const json &token : added) {
    std::string content = token.at("content").get<std::string>();
    int64_t id = token.at("id").get<int64_t>();
    if (content.empty())
      return fileError(path, "added token " + std::to_string(id) + " is empty");
    for (const char *flag : {"lstrip", "rstrip", "single_word"})
      if (isTrue(token, flag))
        return fileError(path, "added token '" + content + "' sets " + flag +
                                   ", which is not supported");
    bool normalized = token.value("normalized", !token.value("special", false));
    s.addedByFirstByte[normalized][uint8_t(content[0])].push_back(
        {content, id});
    s.addedIds[content] = id;
    s.bytesOfId[id] = byteLevelBytes(content);
    s.hasId[id] = 1;
    s.specialId[id] = token.value("special", false);
  }
  for (auto &buckets : s.addedByFirstByte)
    for (auto &bucket : buckets)
      std::sort(bucket.begin(), bucket.end(), [](const auto &a, const auto &b) {
        return a.content.size() > b.content.size();
      });
  for (const std::vector<int64_t> *ids : {&s.prefixIds, &s.suffixIds})
    for (int64_t id : *ids)
      if (id < 0 || id >= size || !s.hasId[id])
        return fileError(path, "post_processor adds id " + std::to_string(id) +
                                   ", which has no token");
  return Error::success();
}

Error parseTokenizerConfig(const json &config, State &s,
                           const std::string &path) {
  if (!config.is_object())
    return fileError(path, "not a JSON object");
  s.bosText = tokenContent(config.value("bos_token", json()));
  s.eosText = tokenContent(config.value("eos_token", json()));
  s.addBos = isTrue(config, "add_bos_token");
  const json chatTemplate = config.value("chat_template", json());
  if (chatTemplate.is_string()) {
    s.chatTemplate = chatTemplate.get<std::string>();
  } else if (chatTemplate.is_array()) { // [{"name": ..., "template": ...}]
    for (const json &named : chatTemplate)
      if (named.value("name", "") == "default")
        s.chatTemplate = named.value("template", "");
  }
  if (!s.chatTemplate.empty())
    s.chatTemplateFile = path;
  return Error::success();
}

} // namespace

Expected<Tokenizer> Tokenizer::load(const std::string &directory) {
  auto state = std::make_shared<State>();
  state->directory = directory;
  std::string path = directory + "/tokenizer.json";
  try {
    json root;
    if (Error err = readJson(path, root))
      return err;
    if (Error err = parseTokenizerJson(root, *state, path))
      return err;
    path = directory + "/tokenizer_config.json";
    if (isRegularFile(path)) {
      json config;
      if (Error err = readJson(path, config))
        return err;
      if (Error err = parseTokenizerConfig(config, *state, path))
        return err;
    }
    path = directory + "/chat_template.jinja";
    if (state->chatTemplate.empty() && isRegularFile(path)) {
      Expected<MappedFile> file = mapInputFile(path, uint64_t(1) << 24);
      if (!file)
        return file.takeError();
      state->chatTemplate = std::string(file->text());
      state->chatTemplateFile = path;
    }
  } catch (const json::exception &e) { // a wrong type or a missing key
    return fileError(path, "unexpected JSON: " + describe(e));
  }
  state->bos = state->idOf(state->bosText);
  state->eos = state->idOf(state->eosText);
  Tokenizer tokenizer;
  tokenizer.state = std::move(state);
  return tokenizer;
}

bool Tokenizer::existsIn(const std::string &directory) {
  return isRegularFile(directory + "/tokenizer.json");
}

//===----------------------------------------------------------------------===//
// Encoding
//===----------------------------------------------------------------------===//

namespace {

/// A piece of the text: an added token's id, or text still to tokenize.
struct Piece {
  std::string_view text;
  int64_t addedId = -1;
};

/// Splits the text pieces of `pieces` on one class of added tokens, taking
/// the longest token at the leftmost position that starts one.
void splitOnAddedTokens(
    std::vector<Piece> &pieces,
    const std::array<std::vector<State::AddedToken>, 256> &byFirstByte) {
  std::vector<Piece> result;
  for (const Piece &piece : pieces) {
    if (piece.addedId >= 0) {
      result.push_back(piece);
      continue;
    }
    std::string_view text = piece.text;
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
      const State::AddedToken *found = nullptr;
      for (const State::AddedToken &token : byFirstByte[uint8_t(text[i])])
        if (text.compare(i, token.content.size(), token.content) == 0) {
          found = &token;
          break;
        }
      if (!found) {
        ++i;
        continue;
      }
      if (i > start)
        result.push_back({text.substr(start, i - start)});
      result.push_back({text.substr(i, found->content.size()), found->id});
      i += found->content.size();
      start = i;
    }
    if (start < text.size())
      result.push_back({text.substr(start)});
  }
  pieces = std::move(result);
}

/// Splits `text` at every match of `regex`, keeping matches and the gaps
/// between them as pieces (behavior Isolated); empty matches split nothing.
void splitIsolated(const pcre2_code *regex, pcre2_match_data *match,
                   std::string_view text, std::vector<std::string_view> &out) {
  size_t gapStart = 0, searchFrom = 0;
  while (searchFrom < text.size()) {
    int rc = pcre2_match(regex, reinterpret_cast<PCRE2_SPTR>(text.data()),
                         text.size(), searchFrom, PCRE2_NO_UTF_CHECK, match,
                         nullptr);
    if (rc < 0)
      break; // no further match: the rest is one gap
    const PCRE2_SIZE *offsets = pcre2_get_ovector_pointer(match);
    size_t begin = offsets[0], end = offsets[1];
    if (begin == end) { // step over one character
      searchFrom = begin + 1;
      while (searchFrom < text.size() &&
             (uint8_t(text[searchFrom]) & 0xC0) == 0x80)
        ++searchFrom;
      continue;
    }
    if (begin > gapStart)
      out.push_back(text.substr(gapStart, begin - gapStart));
    out.push_back(text.substr(begin, end - begin));
    gapStart = searchFrom = end;
  }
  if (gapStart < text.size())
    out.push_back(text.substr(gapStart));
}

/// BPE of one pre-tokenized piece, already in byte-level characters: start
/// from single characters and apply the lowest-ranked merge among adjacent
/// pairs (leftmost on ties) until none applies, as `tokenizers`' Word does.
void applyMerges(const State &s, const std::string &word,
                 std::vector<int64_t> &out) {
  if (s.ignoreMerges) {
    if (auto it = s.vocab.find(word); it != s.vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int64_t id;
    int prev, next; // neighbours still alive, -1 at the ends
    bool alive;
  };
  std::vector<Symbol> symbols;
  for (size_t i = 0; i < word.size();) {
    size_t begin = i;
    nextCodePoint(word, i);
    auto it = s.vocab.find(word.substr(begin, i - begin));
    if (it == s.vocab.end()) // without unk_token `tokenizers` drops it too
      continue;
    int index = int(symbols.size());
    symbols.push_back({it->second, index - 1, index + 1, true});
  }
  if (symbols.empty())
    return;
  symbols.back().next = -1;

  // Candidate merges ordered by (rank, position); stale ones are skipped.
  struct Candidate {
    int32_t rank;
    int position;
    int64_t left, right;
    bool operator>(const Candidate &o) const {
      return rank != o.rank ? rank > o.rank : position > o.position;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>,
                      std::greater<Candidate>>
      queue;
  auto consider = [&](int position) {
    if (position < 0 || symbols[position].next < 0)
      return;
    int next = symbols[position].next;
    int64_t left = symbols[position].id, right = symbols[next].id;
    auto it = s.merges.find(uint64_t(left) << 32 | uint64_t(right));
    if (it != s.merges.end())
      queue.push({it->second.rank, position, left, right});
  };
  for (int i = 0; i + 1 < int(symbols.size()); ++i)
    consider(i);
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol &left = symbols[top.position];
    if (!left.alive || left.next < 0 || left.id != top.left ||
        symbols[left.next].id != top.right)
      continue;
    Symbol &right = symbols[left.next];
    left.id =
        s.merges.at(uint64_t(top.left) << 32 | uint64_t(top.right)).result;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0)
      symbols[right.next].prev = top.position;
    if (left.prev >= 0)
      consider(left.prev);
    consider(top.position);
  }
  for (const Symbol &symbol : symbols)
    if (symbol.alive)
      out.push_back(symbol.id);
}

} // namespace

std::vector<int64_t> Tokenizer::encode(std::string_view text,
                                       bool addSpecialTokens) const {
  const State &s = *state;
  std::string clean;
  // PCRE2 needs valid UTF-8 (and `tokenizers` only ever sees it).
  appendLossyUtf8(clean, text, /*final=*/true);
  std::vector<Piece> pieces{{clean}};
  splitOnAddedTokens(pieces, s.addedByFirstByte[0]);
  splitOnAddedTokens(pieces, s.addedByFirstByte[1]);

  std::vector<int64_t> ids;
  if (addSpecialTokens)
    ids = s.prefixIds;
  MatchData match(pcre2_match_data_create(1, nullptr), pcre2_match_data_free);
  const ByteLevelAlphabet &alphabet = byteLevelAlphabet();
  std::vector<std::string_view> words, next;
  for (const Piece &piece : pieces) {
    if (piece.addedId >= 0) {
      ids.push_back(piece.addedId);
      continue;
    }
    words.assign(1, piece.text);
    for (const Regex &regex : s.splits) {
      next.clear();
      for (std::string_view word : words)
        splitIsolated(regex.get(), match.get(), word, next);
      words.swap(next);
    }
    for (std::string_view word : words) {
      std::string mapped;
      for (char byte : word)
        mapped += alphabet.charOfByte[uint8_t(byte)];
      {
        std::lock_guard<std::mutex> lock(s.cacheMutex);
        if (auto it = s.cache.find(mapped); it != s.cache.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          continue;
        }
      }
      size_t first = ids.size();
      applyMerges(s, mapped, ids);
      if (mapped.size() <= 256) { // long runs are rare; keep the cache small
        std::lock_guard<std::mutex> lock(s.cacheMutex);
        if (s.cache.size() >= 1 << 16)
          s.cache.clear();
        s.cache.emplace(std::move(mapped),
                        std::vector<int64_t>(ids.begin() + first, ids.end()));
      }
    }
  }
  if (addSpecialTokens)
    ids.insert(ids.end(), s.suffixIds.begin(), s.suffixIds.end());
  return ids;
}

//===----------------------------------------------------------------------===//
// Decoding and queries
//===----------------------------------------------------------------------===//

std::string Tokenizer::decode(const std::vector<int64_t> &ids,
                              bool skipSpecialTokens) const {
  std::string bytes;
  for (int64_t id : ids)
    if (hasToken(id) && !(skipSpecialTokens && isSpecial(id)))
      bytes += state->bytesOfId[id];
  std::string text;
  appendLossyUtf8(text, bytes, /*final=*/true);
  return text;
}

int64_t Tokenizer::vocabSize() const { return int64_t(state->hasId.size()); }
bool Tokenizer::hasToken(int64_t id) const {
  return id >= 0 && id < vocabSize() && state->hasId[id];
}
bool Tokenizer::isSpecial(int64_t id) const {
  return hasToken(id) && state->specialId[id];
}
const std::string &Tokenizer::tokenBytes(int64_t id) const {
  static const std::string none;
  return hasToken(id) ? state->bytesOfId[id] : none;
}
std::optional<int64_t> Tokenizer::tokenId(std::string_view tokenText) const {
  return state->idOf(tokenText);
}
std::optional<int64_t> Tokenizer::bosId() const { return state->bos; }
std::optional<int64_t> Tokenizer::eosId() const { return state->eos; }
const std::string &Tokenizer::bosToken() const { return state->bosText; }
const std::string &Tokenizer::eosToken() const { return state->eosText; }
bool Tokenizer::addBosToken() const { return state->addBos; }
const std::string &Tokenizer::chatTemplateSource() const {
  return state->chatTemplate;
}
const std::string &Tokenizer::chatTemplateFile() const {
  return state->chatTemplateFile;
}
const std::string &Tokenizer::directory() const { return state->directory; }

StreamingDecoder::StreamingDecoder(const Tokenizer &tokenizer,
                                   bool skipSpecialTokens)
    : tokenizer(&tokenizer), skipSpecialTokens(skipSpecialTokens) {}

std::string StreamingDecoder::push(int64_t id) {
  if (skipSpecialTokens && tokenizer->isSpecial(id))
    return "";
  pending += tokenizer->tokenBytes(id);
  std::string text;
  pending.erase(0, appendLossyUtf8(text, pending, /*final=*/false));
  return text;
}

std::string StreamingDecoder::finish() {
  std::string text;
  appendLossyUtf8(text, pending, /*final=*/true);
  pending.clear();
  return text;
}

} // namespace dsv3::rt
