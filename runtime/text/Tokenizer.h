//===- Tokenizer.h - Hugging Face byte-level BPE tokenizers -----*- C++ -*-===//
//
// Part of the runtime core (no LLVM). Reads a model's `tokenizer.json` (the
// Hugging Face `tokenizers` format) and `tokenizer_config.json` and turns text
// into token ids and back exactly as `tokenizers` does for DeepSeek-V3's
// tokenizer: added tokens split out first, regex `Split` pre-tokenizers,
// GPT-2 byte-level mapping, rank-ordered BPE merges, a TemplateProcessing
// post-processor for the BOS token, and a ByteLevel decoder. Anything the
// file asks for that is not implemented is a load error, never a silent
// difference. The chat template is rendered by runtime/text/ChatTemplate.h.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_TEXT_TOKENIZER_H
#define DSV3_RUNTIME_TEXT_TOKENIZER_H

#include "runtime/support/Error.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::rt {

struct TokenizerState; // the tables, defined in Tokenizer.cpp

/// A loaded tokenizer. Immutable after load; copies share their tables and
/// every method may be called from several threads at once.
class Tokenizer {
public:
  /// Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json
  /// (bos/eos tokens, add_bos_token, chat_template; a transformers-5 style
  /// DIR/chat_template.jinja when the config holds no template).
  static Expected<Tokenizer> load(const std::string &directory);
  /// Whether DIR/tokenizer.json exists.
  static bool existsIn(const std::string &directory);

  /// Token ids of `text`; addSpecialTokens adds what the post-processor adds
  /// (DeepSeek-V3: BOS in front). Special-token strings inside the text
  /// become their ids (Hugging Face's default). Invalid UTF-8 is read as
  /// U+FFFD, as Python's `decode(errors="replace")` would.
  std::vector<int64_t> encode(std::string_view text,
                              bool addSpecialTokens) const;
  /// The text of `ids`; ids without a token are dropped, special tokens too
  /// when skipSpecialTokens. Bytes that are not valid UTF-8 become U+FFFD.
  std::string decode(const std::vector<int64_t> &ids,
                     bool skipSpecialTokens) const;

  /// 1 + the largest id that has a token (ids >= this have no token).
  int64_t vocabSize() const;
  /// False for ids in holes of the vocabulary or past its end.
  bool hasToken(int64_t id) const;
  /// An added token marked `special` (skipped by decode when asked).
  bool isSpecial(int64_t id) const;
  /// The bytes `id` decodes to ("" for an id without a token); may be an
  /// incomplete UTF-8 character.
  const std::string &tokenBytes(int64_t id) const;
  /// The id of a token as written in tokenizer.json: an added token's content
  /// or a vocabulary entry in byte-level form ("Ġthe").
  std::optional<int64_t> tokenId(std::string_view tokenText) const;

  /// tokenizer_config.json's bos_token / eos_token, looked up in the vocab.
  std::optional<int64_t> bosId() const;
  std::optional<int64_t> eosId() const;
  /// Their texts ("" when the config names none).
  const std::string &bosToken() const;
  const std::string &eosToken() const;
  /// tokenizer_config.json's add_bos_token (informational: encode follows
  /// tokenizer.json's post-processor, as `tokenizers` does).
  bool addBosToken() const;

  /// The Jinja chat template ("" when none) and the file it came from.
  const std::string &chatTemplateSource() const;
  const std::string &chatTemplateFile() const;
  const std::string &directory() const;

private:
  Tokenizer() = default; // only load() makes one
  std::shared_ptr<const TokenizerState> state;
};

/// Turns ids into text as they are generated, never emitting part of a UTF-8
/// character: the bytes of a character split over several tokens wait until
/// it is complete. The concatenation of every push() and finish() equals
/// Tokenizer::decode of all the ids. The tokenizer must outlive it.
class StreamingDecoder {
public:
  explicit StreamingDecoder(const Tokenizer &tokenizer,
                            bool skipSpecialTokens = true);
  /// The text that `id` completes (often "", or several characters).
  std::string push(int64_t id);
  /// The rest: an unfinished character becomes U+FFFD. Resets the decoder.
  std::string finish();

private:
  const Tokenizer *tokenizer;
  bool skipSpecialTokens;
  std::string pending; // bytes of an incomplete character
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_TEXT_TOKENIZER_H
