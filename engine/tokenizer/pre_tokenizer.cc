#include "engine/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/unicode.h"

namespace loom::tokenizer {
namespace {

// Regexes as in llama.cpp's llm_tokenizer_bpe (llama-vocab.cpp).
constexpr const char* kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
constexpr const char* kLlama3Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const PreTokenizerSpec& DefaultSpec() {
  static const PreTokenizerSpec spec{
      {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2Regex, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false};
  return spec;
}

struct NamedSpec {
  std::vector<std::string_view> names;
  PreTokenizerSpec spec;
};

const std::vector<NamedSpec>& Table() {
  static const std::vector<NamedSpec> table = {
      {{"default"}, DefaultSpec()},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       {{kLlama3Regex}, /*ignore_merges=*/true, /*add_bos=*/true}},
      {{"dbrx", "smaug-bpe"}, {{kLlama3Regex}, false, false}},
      {{"gpt2", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
        "a.x-4.0", "mellum", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais",
        "exaone4", "trillion", "granite-docling"},
       {{kGpt2Regex}, false, false}},
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
       {{"\\p{N}", kGpt2Regex}, false, false}},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2", "hunyuan"},
       {{kQwen2Regex}, false, false}},
  };
  return table;
}

// Codepoints that PCRE2 10.42 (Unicode 14) classes differently from llama.cpp's unicode-data.cpp
// (Unicode 15.1), found by comparing the two over every codepoint: `cls` is llama.cpp's class
// (\p{L}, \p{N}, \p{P}, or neither and not whitespace).
enum class Cls : uint8_t { kOther, kLetter, kNumber, kPunct };
struct ClassRange {
  uint32_t first, last;
  Cls cls;
};
constexpr ClassRange kClassFixes[] = {
    {0x180E, 0x180E, Cls::kOther},    {0x1123F, 0x11240, Cls::kLetter},
    {0x11B00, 0x11B09, Cls::kPunct},  {0x11F02, 0x11F02, Cls::kLetter},
    {0x11F04, 0x11F10, Cls::kLetter}, {0x11F12, 0x11F33, Cls::kLetter},
    {0x11F43, 0x11F4F, Cls::kPunct},  {0x11F50, 0x11F59, Cls::kNumber},
    {0x1342F, 0x1342F, Cls::kLetter}, {0x13441, 0x13446, Cls::kLetter},
    {0x1B132, 0x1B132, Cls::kLetter}, {0x1B155, 0x1B155, Cls::kLetter},
    {0x1D2C0, 0x1D2D3, Cls::kNumber}, {0x1DF25, 0x1DF2A, Cls::kLetter},
    {0x1E030, 0x1E06D, Cls::kLetter}, {0x1E4D0, 0x1E4EB, Cls::kLetter},
    {0x1E4F0, 0x1E4F9, Cls::kNumber}, {0x2B739, 0x2B739, Cls::kLetter},
    {0x2EBF0, 0x2EE5D, Cls::kLetter}, {0x31350, 0x323AF, Cls::kLetter},
};

// The codepoint PCRE2 sees for `cpt`: one of the same class under llama.cpp's tables where the
// two disagree (see kClassFixes; U+180E is whitespace for PCRE2 only), and U+FFFD for the
// surrogates llama.cpp accepts, which are not valid UTF-8. Stand-ins are never literal in a regex.
inline uint32_t MatchCodepoint(uint32_t cpt) {
  if (cpt < 0x180E) return cpt;
  if (cpt >= 0xD800 && cpt <= 0xDFFF) return 0xFFFD;
  const ClassRange* it =
      std::upper_bound(std::begin(kClassFixes), std::end(kClassFixes), cpt,
                       [](uint32_t c, const ClassRange& r) { return c < r.first; });
  if (it == std::begin(kClassFixes) || cpt > (it - 1)->last) return cpt;
  switch ((it - 1)->cls) {
    case Cls::kLetter:
      return 0x4E00;  // CJK ideograph, Lo
    case Cls::kNumber:
      return 0x0661;  // ARABIC-INDIC DIGIT ONE, Nd
    case Cls::kPunct:
      return 0x00A1;  // INVERTED EXCLAMATION MARK, Po
    case Cls::kOther:
      break;
  }
  return 0xFFFD;  // So
}

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

const PreTokenizerSpec* FindPreTokenizerSpec(std::string_view pre) {
  for (const NamedSpec& row : Table()) {
    if (std::find(row.names.begin(), row.names.end(), pre) != row.names.end()) return &row.spec;
  }
  return nullptr;
}

PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(std::string_view pre,
                                                                   std::string* warning) {
  const PreTokenizerSpec* spec = FindPreTokenizerSpec(pre);
  if (spec == nullptr) {
    if (warning != nullptr) {
      *warning = absl::StrCat("missing or unrecognized pre-tokenizer type '", std::string(pre),
                              "', using 'default' (as llama.cpp does)");
    }
    spec = &DefaultSpec();
  }
  return FromSpec(*spec);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromSpec(const PreTokenizerSpec& spec) {
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->spec_ = spec;
  for (const std::string& pattern : spec.regexes) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto re = std::make_unique<Regex>();
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (re->code == nullptr) {
      std::array<PCRE2_UCHAR, 256> msg{};
      pcre2_get_error_message(error, msg.data(), msg.size());
      return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer regex '", pattern,
                                                     "' at offset ", error_offset, ": ",
                                                     reinterpret_cast<const char*>(msg.data())));
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);  // the interpreter is the fallback
    p->regexes_.push_back(std::move(re));
  }
  return p;
}

std::vector<std::string> PreTokenizer::Split(std::string_view text) const {
  std::vector<std::string> words;
  if (text.empty()) return words;
  const std::vector<uint32_t> cpts = DecodeUtf8Lenient(text);
  const size_t n = cpts.size();

  // The text PCRE2 matches (always valid UTF-8) and the byte offset of every codepoint in it.
  std::string subject;
  subject.reserve(text.size() + 8);
  std::vector<size_t> byte_of(n + 1);
  for (size_t i = 0; i < n; ++i) {
    byte_of[i] = subject.size();
    AppendUtf8(MatchCodepoint(cpts[i]), &subject);
  }
  byte_of[n] = subject.size();
  const auto cpt_at_byte = [&](size_t lo, size_t byte) {
    return static_cast<size_t>(std::lower_bound(byte_of.begin() + lo, byte_of.end(), byte) -
                               byte_of.begin());
  };

  // Pieces as codepoint lengths, like llama.cpp's bpe_offsets.
  std::vector<size_t> pieces = {n};
  std::vector<size_t> next;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create(4, nullptr), &pcre2_match_data_free);
  for (const auto& re : regexes_) {
    next.clear();
    size_t start = 0;  // codepoint index of the current piece
    for (const size_t len : pieces) {
      const size_t end = start + len;
      const char* base = subject.data() + byte_of[start];
      const size_t piece_bytes = byte_of[end] - byte_of[start];
      size_t emitted = start;  // codepoints before this are in `next`
      size_t search = 0;       // byte offset within the piece
      while (search < piece_bytes) {
        const int rc = pcre2_match(re->code, reinterpret_cast<PCRE2_SPTR>(base), piece_bytes,
                                   search, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
        if (rc < 0) break;  // no match (or a matching error: the rest stays one piece)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        const size_t m_begin = ov[0], m_end = ov[1];
        if (m_end == m_begin) {  // empty match: step over one codepoint
          const size_t c = cpt_at_byte(start, byte_of[start] + m_begin);
          if (c >= end) break;
          search = byte_of[c + 1] - byte_of[start];
          continue;
        }
        const size_t c_begin = cpt_at_byte(start, byte_of[start] + m_begin);
        const size_t c_end = cpt_at_byte(c_begin, byte_of[start] + m_end);
        if (c_begin > emitted) next.push_back(c_begin - emitted);
        next.push_back(c_end - c_begin);
        emitted = c_end;
        search = m_end;
      }
      if (end > emitted) next.push_back(end - emitted);
      start = end;
    }
    pieces.swap(next);
  }

  words.reserve(pieces.size());
  size_t start = 0;
  for (const size_t len : pieces) {
    std::string w;
    for (size_t i = start; i < start + len; ++i) AppendUtf8(cpts[i], &w);
    words.push_back(std::move(w));
    start += len;
  }
  return words;
}

}  // namespace loom::tokenizer
