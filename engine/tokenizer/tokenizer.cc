#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/unicode.h"

namespace loom::tokenizer {
namespace {

bool IsOneOf(std::string_view s, std::span<const std::string_view> list) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

// Token texts llama.cpp (llama_vocab::impl::load) uses to find special tokens.
constexpr std::array<std::string_view, 10> kEotTexts = {
    "<|eot_id|>",      "<|im_end|>", "<|end|>", "<end_of_turn>",         "<|endoftext|>",
    "<|end_of_text|>", "<EOT>",      "_<EOT>",  "<｜end▁of▁sentence｜>", "<end_of_utterance>"};
constexpr std::array<std::string_view, 1> kEomTexts = {"<|eom_id|>"};
constexpr std::array<std::string_view, 7> kFimPreTexts = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",   "<｜fim▁begin｜>",
    "<PRE>",          "▁<PRE>",       "<|code_prefix|>"};
constexpr std::array<std::string_view, 7> kFimSufTexts = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",   "<｜fim▁hole｜>",
    "<SUF>",          "▁<SUF>",       "<|code_suffix|>"};
constexpr std::array<std::string_view, 7> kFimMidTexts = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>",   "<｜fim▁end｜>",
    "<MID>",          "▁<MID>",       "<|code_middle|>"};
constexpr std::array<std::string_view, 4> kFimPadTexts = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                                          "<PAD>"};
constexpr std::array<std::string_view, 5> kFimRepTexts = {"<|fim_repo|>", "<|repo_name|>",
                                                          "<fim-repo>", "<REPO>", "<reponame>"};
constexpr std::array<std::string_view, 1> kFimSepTexts = {"<|file_sep|>"};
constexpr std::array<std::string_view, 12> kEogTexts = {
    "<|eot_id|>", "<|im_end|>",    "<|end|>",         "<|return|>",
    "<|call|>",   "<end_of_turn>", "<|endoftext|>",   "<|eom_id|>",
    "<EOT>",      "_<EOT>",        "<|end_of_text|>", "<end_of_utterance>"};
constexpr std::array<std::string_view, 4> kAlwaysRenderedTexts = {"<|channel|>", "<|message|>",
                                                                  "<|start|>", "<|constrain|>"};

bool IsSpecialType(TokenType t) { return t == TokenType::kControl || t == TokenType::kUnknown; }

// llama_decode_text: token text (byte-level codepoints) back to raw bytes.
std::string DecodeTokenText(const std::string& text) {
  std::string out;
  for (const uint32_t cpt : DecodeUtf8Lenient(text)) {
    const int b = CodepointToByte(cpt);
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
      continue;
    }
    std::string utf8;
    AppendUtf8(cpt, &utf8);
    out += "[UNK_BYTE_0x";
    for (const char c : utf8) absl::StrAppendFormat(&out, "%02x", static_cast<uint8_t>(c));
    out += text + "]";
  }
  return out;
}

// "<0xAB>" -> 0xAB, else -1.
int ParseByteToken(const std::string& text) {
  if (text.size() != 6 || text.compare(0, 3, "<0x") != 0 || text[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = text[i];
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      v |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      v |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return v;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerData& data) {
  if (data.model != "gpt2") {
    return absl::UnimplementedError(absl::StrCat(
        "tokenizer model '", data.model, "' is not supported (only byte-level BPE 'gpt2')"));
  }
  if (data.tokens.empty()) return absl::InvalidArgumentError("tokenizer has no tokens");
  const size_t n = data.tokens.size();
  if (!data.token_types.empty() && data.token_types.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer has ", n, " tokens but ", data.token_types.size(), " token types"));
  }
  for (const auto& [name, id] : {std::pair<const char*, int32_t>{"bos", data.bos_id},
                                 {"eos", data.eos_id},
                                 {"unk", data.unk_id},
                                 {"pad", data.pad_id},
                                 {"eot", data.eot_id},
                                 {"eom", data.eom_id},
                                 {"fim_pre", data.fim_pre_id},
                                 {"fim_suf", data.fim_suf_id},
                                 {"fim_mid", data.fim_mid_id},
                                 {"fim_pad", data.fim_pad_id},
                                 {"fim_rep", data.fim_rep_id},
                                 {"fim_sep", data.fim_sep_id}}) {
    if (id != kNoToken && (id < 0 || static_cast<size_t>(id) >= n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " token id ", id, " is outside the vocabulary of ", n));
    }
  }

  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->texts_ = data.tokens;
  for (size_t i = 0; i < n; ++i) {
    if (t->texts_[i].empty()) t->texts_[i] = absl::StrCat("[EMPTY_", i, "]");  // as llama.cpp
  }
  t->types_.assign(n, TokenType::kNormal);
  for (size_t i = 0; i < data.token_types.size(); ++i) {
    const int32_t v = data.token_types[i];
    t->types_[i] = (v >= 1 && v <= 6) ? static_cast<TokenType>(v) : TokenType::kUndefined;
  }

  t->pre_name_ = data.pre;
  LOOM_ASSIGN_OR_RETURN(t->pre_, PreTokenizer::Create(data.pre, &t->warning_));
  LOOM_ASSIGN_OR_RETURN(t->bpe_,
                        BpeModel::Create(t->texts_, data.merges, t->pre_->spec().ignore_merges));
  t->bos_id_ = data.bos_id;
  t->eos_id_ = data.eos_id;
  t->unk_id_ = data.unk_id;
  t->pad_id_ = data.pad_id;
  t->add_bos_ = data.add_bos.value_or(t->pre_->spec().add_bos);
  t->add_eos_ = data.add_eos.value_or(false);
  t->ComputeSpecials(data);

  t->pieces_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = t->texts_[i];
    switch (t->types_[i]) {
      case TokenType::kNormal:
        t->pieces_[i] = DecodeTokenText(text);
        break;
      case TokenType::kControl:
      case TokenType::kUnknown:
      case TokenType::kUserDefined:
        t->pieces_[i] = text;
        break;
      case TokenType::kByte: {
        const int b = ParseByteToken(text);  // llama.cpp renders these as nothing for BPE
        if (b >= 0) t->pieces_[i] = std::string(1, static_cast<char>(b));
        break;
      }
      default:
        break;
    }
  }
  return t;
}

void Tokenizer::ComputeSpecials(const TokenizerData& data) {
  const int32_t n = vocab_size();
  // Lowest id with one of `texts` (llama.cpp takes whichever its hash map yields first).
  const auto find_by_text = [&](std::span<const std::string_view> texts) -> int32_t {
    for (int32_t id = 0; id < n; ++id) {
      if (IsOneOf(texts_[id], texts)) return id;
    }
    return kNoToken;
  };
  const auto detect = [&](int32_t given, std::span<const std::string_view> texts) {
    if (given != kNoToken) return given;
    const int32_t id = find_by_text(texts);
    if (id != kNoToken) types_[id] = TokenType::kControl;  // llama.cpp overrides the type
    return id;
  };
  eot_id_ = detect(data.eot_id, kEotTexts);
  const int32_t eom = detect(data.eom_id, kEomTexts);
  detect(data.fim_pre_id, kFimPreTexts);
  detect(data.fim_suf_id, kFimSufTexts);
  detect(data.fim_mid_id, kFimMidTexts);
  const int32_t fim_pad = detect(data.fim_pad_id, kFimPadTexts);
  const int32_t fim_rep = detect(data.fim_rep_id, kFimRepTexts);
  const int32_t fim_sep = detect(data.fim_sep_id, kFimSepTexts);

  is_eog_.assign(n, false);
  for (const int32_t id : {fim_pad, fim_rep, fim_sep, eos_id_, eot_id_, eom}) {
    if (id != kNoToken) is_eog_[id] = true;
  }
  for (int32_t id = 0; id < n; ++id) {
    if (IsOneOf(texts_[id], kEogTexts)) {
      is_eog_[id] = true;
      types_[id] = TokenType::kControl;
    }
    if (IsOneOf(texts_[id], kAlwaysRenderedTexts)) types_[id] = TokenType::kUserDefined;
  }
  // o200k_harmony: with <|return|> and <|call|> present, <|end|> is not end-of-generation.
  int32_t end_id = kNoToken;
  bool has_return = false, has_call = false;
  for (int32_t id = 0; id < n; ++id) {
    if (!is_eog_[id]) continue;
    if (texts_[id] == "<|return|>") has_return = true;
    if (texts_[id] == "<|call|>") has_call = true;
    if (texts_[id] == "<|end|>") end_id = id;
  }
  if (has_return && has_call && end_id != kNoToken) {
    is_eog_[end_id] = false;
    types_[end_id] = TokenType::kUserDefined;
  }
  eog_ids_.clear();
  for (int32_t id = 0; id < n; ++id) {
    if (is_eog_[id]) eog_ids_.push_back(id);
  }

  special_tokens_.clear();
  for (int32_t id = 0; id < n; ++id) {
    const TokenType t = types_[id];
    if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) {
      special_tokens_.push_back(id);
    }
  }
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(),
                   [&](int32_t a, int32_t b) { return texts_[a].size() > texts_[b].size(); });
}

// llama.cpp's tokenizer_st_partition: for each special token, longest text first, split every
// raw fragment at each of its (non-overlapping, left to right) occurrences.
std::vector<Tokenizer::Fragment> Tokenizer::Partition(std::string_view text,
                                                      bool parse_special) const {
  std::vector<Fragment> frags = {{kNoToken, 0, text.size()}};
  std::vector<Fragment> next;
  for (const int32_t id : special_tokens_) {
    if (!parse_special && IsSpecialType(types_[id])) continue;
    const std::string& needle = texts_[id];
    if (text.find(needle) == std::string_view::npos) continue;
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token != kNoToken) {
        next.push_back(f);
        continue;
      }
      const size_t end = f.begin + f.size;
      const std::string_view window = text.substr(0, end);
      size_t pos = f.begin;
      while (pos < end) {
        const size_t match = window.find(needle, pos);
        if (match == std::string_view::npos) break;
        if (match > pos) next.push_back({kNoToken, pos, match - pos});
        next.push_back({id, 0, 0});
        pos = match + needle.size();
      }
      if (pos < end) next.push_back({kNoToken, pos, end - pos});
    }
    frags.swap(next);
  }
  return frags;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && add_bos_ && bos_id_ != kNoToken) out.push_back(bos_id_);
  if (!text.empty()) {
    for (const Fragment& f : Partition(text, parse_special)) {
      if (f.token != kNoToken) {
        out.push_back(f.token);
        continue;
      }
      for (const std::string& word : pre_->Split(text.substr(f.begin, f.size))) {
        bpe_->EncodeWord(word, &out);
      }
    }
  }
  if (add_special && add_eos_ && eos_id_ != kNoToken) out.push_back(eos_id_);
  return out;
}

std::string Tokenizer::TokenToPiece(int32_t id, bool render_special) const {
  if (id < 0 || id >= vocab_size()) return {};
  if (!render_special && IsSpecialType(types_[id])) return {};
  return pieces_[id];
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool render_special) const {
  std::string out;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (!render_special && IsSpecialType(types_[id])) continue;
    out += pieces_[id];
  }
  return out;
}

bool Tokenizer::IsEog(int32_t id) const { return id >= 0 && id < vocab_size() && is_eog_[id]; }

std::optional<int32_t> Tokenizer::TokenId(std::string_view text) const { return bpe_->Find(text); }

const std::string& Tokenizer::TokenText(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < vocab_size() ? texts_[id] : kEmpty;
}

TokenType Tokenizer::GetTokenType(int32_t id) const {
  return id >= 0 && id < vocab_size() ? types_[id] : TokenType::kUndefined;
}

std::string StreamDecoder::Feed(int32_t id) {
  pending_ += tokenizer_->TokenToPiece(id, render_special_);
  const size_t n = CompleteUtf8Prefix(pending_);
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace loom::tokenizer
