//===- TokenizerTest.cpp - tokenizer.json BPE and the chat template -------===//
//
// runtime/text against tests/golden/infer/encodings.json, made by Hugging
// Face `tokenizers` and transformers for two byte-level BPE tokenizers in
// DeepSeek-V3's layout: every golden string encodes to the same ids (with and
// without BOS) and decodes back, every golden chat renders to the same prompt
// and ids, streaming decoding never splits a character, and bad inputs give
// one-line errors naming their file. The tool-call renderings were made with
// jinja2 from the same template (the golden chats hold none).
//
//===----------------------------------------------------------------------===//
#include "runtime/text/Tokenizer.h"
#include "runtime/text/ChatTemplate.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sys/stat.h>
#include <tuple>

using namespace dsv3::rt;
using nlohmann::json;

namespace {

const char *const kTokenizers[] = {"tokenizer-512", "tokenizer-4k"};

std::string goldenDir(const std::string &name) {
  return std::string(DSV3_SOURCE_DIR) + "/tests/golden/infer/" + name;
}

const json &encodings() {
  static const json data = [] {
    std::ifstream in(goldenDir("encodings.json"));
    return json::parse(in);
  }();
  return data;
}

Tokenizer loadGolden(const std::string &name) {
  Expected<Tokenizer> tokenizer = Tokenizer::load(goldenDir(name));
  if (!tokenizer)
    ADD_FAILURE() << tokenizer.error().message();
  return std::move(*tokenizer);
}

std::vector<int64_t> idsOf(const json &array) {
  return array.get<std::vector<int64_t>>();
}

/// Strictly well-formed UTF-8 (no surrogates, no overlong forms).
bool isValidUtf8(const std::string &s) {
  for (size_t i = 0; i < s.size();) {
    uint8_t b = uint8_t(s[i]);
    int n = b < 0x80                 ? 1
            : b >= 0xC2 && b <= 0xDF ? 2
            : b >= 0xE0 && b <= 0xEF ? 3
            : b >= 0xF0 && b <= 0xF4 ? 4
                                     : 0;
    if (n == 0 || i + n > s.size())
      return false;
    uint8_t second = n > 1 ? uint8_t(s[i + 1]) : 0x80;
    if ((b == 0xE0 && second < 0xA0) || (b == 0xED && second > 0x9F) ||
        (b == 0xF0 && second < 0x90) || (b == 0xF4 && second > 0x8F))
      return false;
    for (int k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80)
        return false;
    i += n;
  }
  return true;
}

/// A fresh directory holding tokenizer.json = `text`.
std::string directoryWith(const std::string &name, const std::string &text) {
  std::string dir = testing::TempDir() + "dsv3-tokenizer-" + name;
  ::mkdir(dir.c_str(), 0755); // may exist from an earlier run
  std::ofstream(dir + "/tokenizer.json") << text;
  return dir;
}

json goldenTokenizerJson() {
  std::ifstream in(goldenDir("tokenizer-512") + "/tokenizer.json");
  return json::parse(in);
}

/// Loading `dir` fails with one line that names the file and `problem`.
void expectLoadError(const std::string &dir, const std::string &problem) {
  Expected<Tokenizer> tokenizer = Tokenizer::load(dir);
  ASSERT_FALSE(tokenizer);
  const std::string &message = tokenizer.error().message();
  EXPECT_NE(message.find(dir + "/tokenizer.json: "), std::string::npos)
      << message;
  EXPECT_NE(message.find(problem), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

} // namespace

TEST(Tokenizer, GoldenStringsEncodeAndDecode) {
  for (const char *name : kTokenizers) {
    SCOPED_TRACE(name);
    Tokenizer tokenizer = loadGolden(name);
    const json &strings = encodings().at(name).at("strings");
    ASSERT_EQ(strings.size(), 16u);
    for (const json &entry : strings) {
      std::string text = entry.at("text");
      SCOPED_TRACE(text);
      std::vector<int64_t> ids = idsOf(entry.at("ids"));
      EXPECT_EQ(tokenizer.encode(text, false), ids);
      std::vector<int64_t> withSpecial = idsOf(entry.at("ids_with_special"));
      EXPECT_EQ(tokenizer.encode(text, true), withSpecial);
      // "decoded" is the decoding of `ids` (it holds no BOS); skipping
      // special tokens drops the BOS and the specials inside the text alike.
      std::string decoded = entry.at("decoded"),
                  skipped = entry.at("decoded_skip_special");
      EXPECT_EQ(tokenizer.decode(ids, false), decoded);
      EXPECT_EQ(tokenizer.decode(withSpecial, false),
                tokenizer.bosToken() + decoded);
      EXPECT_EQ(tokenizer.decode(ids, true), skipped);
      EXPECT_EQ(tokenizer.decode(withSpecial, true), skipped);
    }
    // A second pass is served by the per-piece cache and must agree.
    for (const json &entry : strings)
      EXPECT_EQ(tokenizer.encode(entry.at("text").get<std::string>(), false),
                idsOf(entry.at("ids")));
  }
}

TEST(Tokenizer, VocabularyEdgesAndSpecialTokens) {
  for (const char *name : kTokenizers) {
    SCOPED_TRACE(name);
    Tokenizer tokenizer = loadGolden(name);
    int64_t size = encodings().at(name).at("vocab_size");
    EXPECT_EQ(tokenizer.vocabSize(), size);
    EXPECT_EQ(size, std::string(name) == "tokenizer-512" ? 512 : 4096);
    EXPECT_TRUE(tokenizer.hasToken(0));
    EXPECT_TRUE(tokenizer.hasToken(size - 1));
    EXPECT_FALSE(tokenizer.hasToken(size));
    EXPECT_FALSE(tokenizer.hasToken(-1));
    EXPECT_EQ(tokenizer.tokenBytes(size), "");
    EXPECT_EQ(tokenizer.bosId(), std::optional<int64_t>(0));
    EXPECT_EQ(tokenizer.eosId(), std::optional<int64_t>(1));
    EXPECT_EQ(tokenizer.bosToken(), "<｜begin▁of▁sentence｜>");
    EXPECT_FALSE(tokenizer.addBosToken());
    EXPECT_TRUE(tokenizer.isSpecial(0));
    EXPECT_TRUE(
        tokenizer.isSpecial(size - 1)); // <｜tool▁sep｜>, the last added token
    EXPECT_FALSE(tokenizer.isSpecial(2));
    EXPECT_EQ(tokenizer.tokenId("<｜tool▁sep｜>"),
              std::optional<int64_t>(size - 1));
    EXPECT_EQ(tokenizer.tokenId("<｜User｜>"),
              std::optional<int64_t>(size - 13));
    EXPECT_EQ(tokenizer.tokenId("!"), std::optional<int64_t>(2));
    EXPECT_EQ(tokenizer.tokenId("no such token"), std::nullopt);
    EXPECT_EQ(tokenizer.tokenBytes(2), "!");
    // Ids without a token are dropped by decode.
    EXPECT_EQ(tokenizer.decode({2, size, -5, 2}, false), "!!");
  }
}

TEST(Tokenizer, InvalidUtf8IsReadAsReplacementCharacters) {
  Tokenizer tokenizer = loadGolden("tokenizer-512");
  EXPECT_EQ(tokenizer.encode("a\xFF"
                             "b",
                             false),
            tokenizer.encode("a\xEF\xBF\xBD"
                             "b",
                             false));
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("a\xFF"
                                              "b",
                                              false),
                             false),
            "a\xEF\xBF\xBD"
            "b");
}

TEST(ChatTemplate, GoldenChatsRenderAndEncode) {
  for (const char *name : kTokenizers) {
    SCOPED_TRACE(name);
    Tokenizer tokenizer = loadGolden(name);
    Expected<ChatTemplate> chat = ChatTemplate::fromTokenizer(tokenizer);
    ASSERT_TRUE(chat) << chat.error().message();
    const json &chats = encodings().at(name).at("chat");
    ASSERT_EQ(chats.size(), 6u);
    for (const json &entry : chats) {
      Expected<std::vector<ChatMessage>> messages =
          parseChatMessages(entry.at("messages").dump(), "encodings.json");
      ASSERT_TRUE(messages) << messages.error().message();
      std::string text = chat->render(
          *messages, entry.at("add_generation_prompt"), tokenizer.bosToken());
      EXPECT_EQ(text, entry.at("text").get<std::string>());
      EXPECT_EQ(tokenizer.encode(text, false), idsOf(entry.at("ids")));
    }
  }
}

TEST(ChatTemplate, ToolCallsAndOutputsFollowTheTemplateState) {
  Expected<ChatTemplate> chat =
      ChatTemplate::fromTokenizer(loadGolden("tokenizer-512"));
  ASSERT_TRUE(chat) << chat.error().message();
  struct Case {
    const char *messages;
    bool addGenerationPrompt;
    const char *expected;
  };
  // Rendered by jinja2 from the template (trim_blocks, lstrip_blocks, as
  // transformers does) with bos_token "<BOS>". The second tool-call turn
  // uses the "\n" continuation form: ns.is_first is never reset.
  const Case cases[] = {
      {R"([{"role": "user", "content": "Weather?"},
           {"role": "assistant", "content": null, "tool_calls": [
             {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Ur\"}"}},
             {"type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
           {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "noon"},
           {"role": "assistant", "content": "Sunny at noon."},
           {"role": "user", "content": "And tomorrow?"},
           {"role": "assistant", "content": "Checking.", "tool_calls": [
             {"type": "function", "function": {"name": "get_weather", "arguments": "{\"day\": 2}"}}]},
           {"role": "tool", "content": "rain"}])",
       true,
       "<BOS><｜User｜>Weather?<｜Assistant｜><｜tool▁calls▁begin｜><"
       "｜tool▁call▁begin｜>function"
       "<｜tool▁sep｜>get_weather\n```json\n{\"city\": "
       "\"Ur\"}\n```<｜tool▁call▁end｜>\n"
       "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<"
       "｜tool▁call▁end｜>"
       "<｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜><"
       "｜tool▁output▁begin｜>sunny"
       "<｜tool▁output▁end｜><｜tool▁output▁begin｜>noon<｜tool▁output▁end｜><"
       "｜tool▁outputs▁end｜>"
       "Sunny at noon.<｜end▁of▁sentence｜><｜User｜>And "
       "tomorrow?\n<｜tool▁call▁begin｜>function"
       "<｜tool▁sep｜>get_weather\n```json\n{\"day\": "
       "2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
       "<｜end▁of▁sentence｜><｜tool▁output▁begin｜>rain<｜tool▁output▁end｜><"
       "｜tool▁outputs▁end｜>"},
      {R"([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
           {"role": "assistant", "content": "a</think>b</think>c"},
           {"role": "assistant", "content": "plain"}, {"role": "user", "content": "Q2"}])",
       true,
       "<BOS>S<｜User｜>Q<｜Assistant｜>c<｜end▁of▁sentence｜><｜Assistant｜>"
       "plain"
       "<｜end▁of▁sentence｜><｜User｜>Q2<｜Assistant｜>"},
      {R"([{"role": "user", "content": "x"},
           {"role": "assistant", "content": "y", "tool_calls": []},
           {"role": "tool", "content": "o"}])",
       false,
       "<BOS><｜User｜>x<｜tool▁calls▁end｜><｜end▁of▁sentence｜><"
       "｜tool▁outputs▁begin｜>"
       "<｜tool▁output▁begin｜>o<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"},
  };
  for (const Case &c : cases) {
    Expected<std::vector<ChatMessage>> messages =
        parseChatMessages(c.messages, "case");
    ASSERT_TRUE(messages) << messages.error().message();
    EXPECT_EQ(chat->render(*messages, c.addGenerationPrompt, "<BOS>"),
              c.expected);
  }
}

TEST(ChatTemplate, OtherTemplatesAndBadMessagesAreRefused) {
  // An R1-style look-alike: the same text but "<think>\n" after the prompt.
  std::ifstream in(goldenDir("tokenizer-512") + "/tokenizer_config.json");
  std::string v3 = json::parse(in).at("chat_template");
  std::string r1 = v3;
  size_t tail = r1.rfind("{{'<｜Assistant｜>'}}");
  ASSERT_NE(tail, std::string::npos);
  r1.replace(tail, std::string("{{'<｜Assistant｜>'}}").size(),
             "{{'<｜Assistant｜><think>\\n'}}");

  EXPECT_TRUE(ChatTemplate::recognise(v3, "config.json"));
  std::string reindented = v3;
  for (size_t at = 0;
       (at = reindented.find("{%- for", at)) != std::string::npos; at += 4)
    reindented.insert(at, "\n  ");
  EXPECT_TRUE(ChatTemplate::recognise(reindented, "config.json"));
  for (const std::string &other :
       {r1, std::string("{{ messages }}"), std::string()}) {
    Expected<ChatTemplate> chat =
        ChatTemplate::recognise(other, "dir/tokenizer_config.json");
    ASSERT_FALSE(chat);
    EXPECT_EQ(chat.error().message().rfind("dir/tokenizer_config.json: ", 0),
              0u)
        << chat.error().message();
  }

  Expected<std::vector<ChatMessage>> bad =
      parseChatMessages(R"([{"content": "x"}])", "req");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "req: message 0 has no role");
  EXPECT_FALSE(parseChatMessages("[{", "req"));
  EXPECT_FALSE(parseChatMessages(R"([{"role": "user", "content": 3}])", "req"));
}

TEST(StreamingDecoder, ChunksAreWholeCharactersAndAddUpToDecode) {
  for (const char *name : kTokenizers) {
    SCOPED_TRACE(name);
    Tokenizer tokenizer = loadGolden(name);
    for (const json &entry : encodings().at(name).at("strings")) {
      std::vector<int64_t> ids = idsOf(entry.at("ids_with_special"));
      for (bool skip : {false, true}) {
        StreamingDecoder stream(tokenizer, skip);
        std::string text;
        for (int64_t id : ids) {
          std::string chunk = stream.push(id);
          EXPECT_TRUE(isValidUtf8(chunk)) << chunk;
          text += chunk;
        }
        text += stream.finish();
        EXPECT_EQ(text, tokenizer.decode(ids, skip));
      }
    }
  }
}

TEST(StreamingDecoder, HoldsBackSplitCharactersAndReplacesBrokenOnes) {
  Tokenizer tokenizer = loadGolden("tokenizer-512");
  std::vector<int64_t> thumb =
      tokenizer.encode("👍", false); // one token per byte here
  ASSERT_EQ(thumb.size(), 4u);
  StreamingDecoder stream(tokenizer);
  EXPECT_EQ(stream.push(thumb[0]), "");
  EXPECT_EQ(stream.push(thumb[1]), "");
  EXPECT_EQ(stream.push(thumb[2]), "");
  EXPECT_EQ(stream.push(thumb[3]), "👍");

  // Three bytes of it, then "a": one U+FFFD for the broken character, as in
  // decode; a broken character at the end comes out of finish().
  std::vector<int64_t> broken = {thumb[0], thumb[1], thumb[2],
                                 *tokenizer.tokenId("a"), thumb[0]};
  std::string text;
  for (int64_t id : broken)
    text += stream.push(id);
  EXPECT_EQ(text, "\xEF\xBF\xBD"
                  "a");
  text += stream.finish();
  EXPECT_EQ(text, "\xEF\xBF\xBD"
                  "a\xEF\xBF\xBD");
  EXPECT_EQ(text, tokenizer.decode(broken, true));
  EXPECT_EQ(stream.finish(), "");

  // Special tokens are skipped by default and kept on request.
  EXPECT_EQ(StreamingDecoder(tokenizer).push(0), "");
  EXPECT_EQ(StreamingDecoder(tokenizer, false).push(0),
            "<｜begin▁of▁sentence｜>");
}

TEST(Tokenizer, ErrorsNameTheFile) {
  EXPECT_FALSE(Tokenizer::existsIn("/nonexistent/dsv3-tokenizer"));
  EXPECT_TRUE(Tokenizer::existsIn(goldenDir("tokenizer-512")));
  expectLoadError("/nonexistent/dsv3-tokenizer", "");

  expectLoadError(directoryWith("malformed", "{\"model\": {"), "invalid JSON");
  expectLoadError(directoryWith("array", "[1, 2]"), "not a JSON object");

  json wordPiece = goldenTokenizerJson();
  wordPiece["model"]["type"] = "WordPiece";
  expectLoadError(directoryWith("wordpiece", wordPiece.dump()),
                  "unsupported model type 'WordPiece'");

  json normalizer = goldenTokenizerJson();
  normalizer["normalizer"] = {{"type", "NFKC"}};
  expectLoadError(directoryWith("normalizer", normalizer.dump()),
                  "unsupported normalizer 'NFKC'");

  json preTokenizer = goldenTokenizerJson();
  preTokenizer["pre_tokenizer"] = {{"type", "Whitespace"}};
  expectLoadError(directoryWith("pretokenizer", preTokenizer.dump()),
                  "unsupported pre_tokenizer 'Whitespace'");

  json lstrip = goldenTokenizerJson();
  lstrip["added_tokens"][2]["lstrip"] = true;
  expectLoadError(directoryWith("lstrip", lstrip.dump()), "sets lstrip");

  json badRegex = goldenTokenizerJson();
  badRegex["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(";
  expectLoadError(directoryWith("regex", badRegex.dump()),
                  "pre_tokenizer regex '('");

  json wrongType = goldenTokenizerJson();
  wrongType["model"]["vocab"]["!"] = "two";
  expectLoadError(directoryWith("wrongtype", wrongType.dump()),
                  "unexpected JSON");
}

TEST(Tokenizer, MergesAsStringsAndIgnoreMerges) {
  Tokenizer golden = loadGolden("tokenizer-512");
  const std::string text =
      "In the beginning God created the heaven and the earth.";

  // Older files write each merge as "left right".
  json strings = goldenTokenizerJson();
  for (json &merge : strings["model"]["merges"])
    merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  Expected<Tokenizer> fromStrings =
      Tokenizer::load(directoryWith("merge-strings", strings.dump()));
  ASSERT_TRUE(fromStrings) << fromStrings.error().message();
  EXPECT_EQ(fromStrings->encode(text, true), golden.encode(text, true));

  // ignore_merges takes a piece that is a whole vocab entry as it is, even
  // where the merges would build it differently; "Ġthe" is one either way.
  json ignore = goldenTokenizerJson();
  ignore["model"]["ignore_merges"] = true;
  ignore["model"]["merges"] = json::array();
  Expected<Tokenizer> ignoring =
      Tokenizer::load(directoryWith("ignore-merges", ignore.dump()));
  ASSERT_TRUE(ignoring) << ignoring.error().message();
  EXPECT_EQ(ignoring->encode(" the", false),
            std::vector<int64_t>{*golden.tokenId("Ġthe")});
  EXPECT_EQ(ignoring->encode(" thex", false).size(),
            5u); // no merges: one token per byte
}

TEST(Tokenizer, AddedTokensMatchLongestFirstAnywhere) {
  json file = goldenTokenizerJson();
  for (auto [id, content, special] :
       {std::tuple{512, "ab", false}, std::tuple{513, "abc", true}})
    file["added_tokens"].push_back({{"id", id},
                                    {"content", content},
                                    {"single_word", false},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", false},
                                    {"special", special}});
  Expected<Tokenizer> tokenizer =
      Tokenizer::load(directoryWith("added", file.dump()));
  ASSERT_TRUE(tokenizer) << tokenizer.error().message();
  EXPECT_EQ(tokenizer->vocabSize(), 514);
  int64_t x = *tokenizer->tokenId("x");
  // Inside words too, never pre-tokenized; "abc" wins over "ab" at one spot.
  EXPECT_EQ(tokenizer->encode("xabcab", false),
            (std::vector<int64_t>{x, 513, 512}));
  // Only the special one is skipped.
  EXPECT_EQ(tokenizer->decode({x, 513, 512}, true), "xab");
  EXPECT_EQ(tokenizer->decode({x, 513, 512}, false), "xabcab");
}

TEST(Tokenizer, EqualRankMergesGoLeftFirstAndHolesHaveNoToken) {
  json file = goldenTokenizerJson();
  file["model"]["vocab"]["ZZ"] = 600; // leaves ids 512..599 without a token
  file["model"]["merges"].push_back({"Z", "Z"});
  Expected<Tokenizer> tokenizer =
      Tokenizer::load(directoryWith("holes", file.dump()));
  ASSERT_TRUE(tokenizer) << tokenizer.error().message();
  int64_t z = *tokenizer->tokenId("Z");
  EXPECT_EQ(tokenizer->encode("ZZZ", false), (std::vector<int64_t>{600, z}));
  EXPECT_EQ(tokenizer->encode("ZZZZ", false), (std::vector<int64_t>{600, 600}));
  EXPECT_EQ(tokenizer->vocabSize(), 601);
  EXPECT_TRUE(tokenizer->hasToken(511));
  EXPECT_FALSE(tokenizer->hasToken(512));
  EXPECT_FALSE(tokenizer->hasToken(599));
  EXPECT_TRUE(tokenizer->hasToken(600));
  EXPECT_EQ(tokenizer->decode({600, 555, z}, false), "ZZZ");
}
