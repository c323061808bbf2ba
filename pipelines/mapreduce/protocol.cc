#include "pipelines/mapreduce/protocol.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::pipelines::mapreduce {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Trim(std::string_view s) {
  return std::string(absl::StripAsciiWhitespace(absl::string_view(s.data(), s.size())));
}

struct Found {
  size_t label_begin = std::string_view::npos;  // where the label's line starts
  size_t value_begin = std::string_view::npos;  // just after the label (and its colon)
};

// The first line at or after `from` that starts (after spaces, '*', '#', '-', or a "1." list
// number) with one of `names` followed by ':'. `lower` is the lower-cased text.
Found FindLabel(const std::string& lower, size_t from, std::initializer_list<const char*> names) {
  size_t line = from;
  while (line <= lower.size()) {
    auto skip_decoration = [&](size_t p) {
      while (p < lower.size() && (lower[p] == ' ' || lower[p] == '\t' || lower[p] == '*' ||
                                  lower[p] == '#' || lower[p] == '-')) {
        ++p;
      }
      return p;
    };
    size_t p = skip_decoration(line);
    size_t q = p;
    while (q < lower.size() && std::isdigit(static_cast<unsigned char>(lower[q]))) ++q;
    if (q > p && q < lower.size() && (lower[q] == '.' || lower[q] == ')')) {
      p = skip_decoration(q + 1);
    }
    for (const char* name : names) {
      const std::string_view n(name);
      if (lower.compare(p, n.size(), n) != 0) continue;
      size_t v = p + n.size();
      while (v < lower.size() && lower[v] == '*') ++v;  // "**Answer**:"
      if (v >= lower.size() || lower[v] != ':') continue;
      ++v;
      while (v < lower.size() && lower[v] == '*') ++v;  // "**Answer:**"
      return {line, v};
    }
    const size_t nl = lower.find('\n', line);
    if (nl == std::string::npos) break;
    line = nl + 1;
  }
  return {};
}

// The fields named by `labels`, in order; a missing label leaves its field unset.
std::vector<std::optional<std::string>> ParseFields(
    std::string_view text, const std::vector<std::initializer_list<const char*>>& labels) {
  const std::string lower = Lower(text);
  std::vector<Found> found(labels.size());
  size_t from = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    found[i] = FindLabel(lower, from, labels[i]);
    if (found[i].value_begin != std::string_view::npos) from = found[i].value_begin;
  }
  std::vector<std::optional<std::string>> out(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (found[i].value_begin == std::string_view::npos) continue;
    size_t end = text.size();
    for (size_t j = i + 1; j < labels.size(); ++j) {
      if (found[j].label_begin != std::string_view::npos) {
        end = found[j].label_begin;
        break;
      }
    }
    out[i] = Trim(text.substr(found[i].value_begin, end - found[i].value_begin));
  }
  return out;
}

// The first number in `s` ("4.5", "5", "4/5" -> 4), clamped to [0, 5].
std::optional<double> ParseScore(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) continue;
    const std::string rest(s.substr(i, 16));
    const double v = std::strtod(rest.c_str(), nullptr);
    return std::clamp(v, 0.0, 5.0);
  }
  return std::nullopt;
}

std::string FieldRule(std::string_view name, int chars) {
  return absl::StrCat(std::string(name), " ::= [^\\n ] [^\\n]{0,", std::max(chars, 1) - 1, "}\n");
}

// Lower-cased ASCII, white space runs as one space, trimmed.
std::string Normalize(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// English function words of three or more letters, which say nothing about a topic.
bool IsStopWord(std::string_view w) {
  static constexpr std::string_view kWords[] = {
      "the", "and", "are", "was", "were", "what", "which", "who", "whom", "whose", "where",
      "when", "why", "how", "this", "that", "these", "those", "for", "with", "from", "does",
      "did", "has", "have", "had", "its", "his", "her", "their", "our", "your", "you", "can",
      "will", "would", "should", "could", "not", "but", "all", "any", "about", "into", "than",
      "then", "there", "they", "them", "she", "him", "been", "being", "some", "such", "only"};
  return std::find(std::begin(kWords), std::end(kWords), w) != std::end(kWords);
}

// `word` occurs in `text` with no letter or digit on either side.
bool ContainsWord(std::string_view text, std::string_view word) {
  for (size_t at = text.find(word); at != std::string_view::npos; at = text.find(word, at + 1)) {
    const size_t end = at + word.size();
    if ((at == 0 || !absl::ascii_isalnum(static_cast<unsigned char>(text[at - 1]))) &&
        (end == text.size() || !absl::ascii_isalnum(static_cast<unsigned char>(text[end])))) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool AnswerIsLiteral(const ChunkResult& r, std::string_view source) {
  std::string answer = Normalize(r.answer);
  while (!answer.empty() && (answer.back() == '.' || answer.back() == '"')) answer.pop_back();
  while (!answer.empty() && answer.front() == '"') answer.erase(0, 1);
  if (answer.empty() || IsNoInformation(answer)) return false;
  // At word boundaries: "441427777" is not a copy of "4414277777".
  const std::string src = Normalize(source);
  auto alnum = [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); };
  for (size_t at = src.find(answer); at != std::string::npos; at = src.find(answer, at + 1)) {
    const size_t end = at + answer.size();
    if ((at == 0 || !alnum(src[at - 1]) || !alnum(answer.front())) &&
        (end == src.size() || !alnum(src[end]) || !alnum(answer.back()))) {
      return true;
    }
  }
  return false;
}

bool CapUnlessLiteral(ChunkResult* r, std::string_view source, double cap) {
  if (r->confidence <= cap || AnswerIsLiteral(*r, source)) return false;
  r->confidence = cap;
  return true;
}

namespace {

// Whether `text` has a word of the question (letters and digits, 3 or more, lower case, not a
// function word). Both are normalized.
bool SharesQuestionWord(std::string_view text, std::string_view q) {
  for (size_t i = 0; i < q.size();) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(q[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < q.size() && absl::ascii_isalnum(static_cast<unsigned char>(q[j]))) ++j;
    const std::string_view word = q.substr(i, j - i);
    if (word.size() >= 3 && !IsStopWord(word) && ContainsWord(text, word)) return true;
    i = j;
  }
  return false;
}

}  // namespace

void MarkGrounded(ChunkResult* r, std::string_view source, std::string_view question) {
  r->grounded = false;
  const std::string text = Normalize(r->extracted);
  if (IsNoInformation(text)) return;
  const std::string src = Normalize(source);
  const std::string q = Normalize(question);
  // Sentence by sentence (split after '.', '!' or '?' and a space): one copied sentence is enough,
  // however much the model wrote around it.
  for (size_t begin = 0; begin < text.size();) {
    size_t end = begin;
    while (end < text.size() && !((text[end] == '.' || text[end] == '!' || text[end] == '?') &&
                                  (end + 1 == text.size() || text[end + 1] == ' '))) {
      ++end;
    }
    std::string_view piece = std::string_view(text).substr(begin, end - begin);
    begin = end + 2;
    while (!piece.empty() && (piece.front() == '"' || piece.front() == ' ')) piece.remove_prefix(1);
    while (!piece.empty() && (piece.back() == '"' || piece.back() == ' ')) piece.remove_suffix(1);
    if (piece.size() >= 12 && src.find(piece) != std::string::npos &&
        SharesQuestionWord(piece, q)) {
      r->grounded = true;
      return;
    }
  }
}

void SortForReading(std::vector<ChunkResult>* results) {
  std::stable_sort(results->begin(), results->end(), [](const ChunkResult& a, const ChunkResult& b) {
    if (a.grounded != b.grounded) return a.grounded;
    return a.confidence > b.confidence;
  });
}

bool IsNoInformation(std::string_view answer) {
  return Lower(answer).find("[no information]") != std::string::npos;
}

ChunkResult ParseChunkResult(std::string_view text, int index) {
  ChunkResult r;
  r.index = index;
  const auto f = ParseFields(text, {{"extracted information", "extracted info"},
                                    {"rationale", "reasoning"},
                                    {"answer", "final answer"},
                                    {"confidence score", "confidence"}});
  const std::optional<double> score = f[3] ? ParseScore(*f[3]) : std::nullopt;
  if (f[0]) r.extracted = *f[0];
  if (f[1]) r.rationale = *f[1];
  if (f[2]) r.answer = *f[2];
  if (score) r.confidence = *score;
  r.parsed = f[0] && f[1] && f[2] && score;
  if (!f[0] && !f[1] && !f[2]) r.extracted = Trim(text);
  r.no_information = IsNoInformation(r.answer);
  return r;
}

ReduceOutput ParseReduceOutput(std::string_view text) {
  ReduceOutput r;
  // Either order: the grammar writes the Answer first; free text may put the Rationale first.
  const std::string lower = Lower(text);
  const size_t a = lower.find("answer"), ra = lower.find("rationale");
  const bool answer_first = a != std::string::npos && (ra == std::string::npos || a < ra);
  auto f = answer_first
               ? ParseFields(text, {{"answer", "final answer"}, {"rationale", "reasoning"}})
               : ParseFields(text, {{"rationale", "reasoning"}, {"answer", "final answer"}});
  if (answer_first) std::swap(f[0], f[1]);
  if (f[0]) r.rationale = *f[0];
  r.answer = f[1] ? *f[1] : Trim(text);
  r.parsed = f[0] && f[1];
  return r;
}

std::string FormatChunkResult(const ChunkResult& r) {
  return absl::StrCat("Extracted Information: ", r.extracted, "\nRationale: ", r.rationale,
                      "\nAnswer: ", r.answer,
                      "\nConfidence Score: ", absl::StrFormat("%.1f", r.confidence));
}

std::string FormatEvidenceItem(const ChunkResult& r, int position) {
  return absl::StrCat("Part ", position + 1, ":\n", FormatChunkResult(r), "\n\n");
}

std::string FormatEvidence(const std::vector<ChunkResult>& results) {
  std::string out;
  for (size_t i = 0; i < results.size(); ++i) {
    out += FormatEvidenceItem(results[i], static_cast<int>(i));
  }
  return out;
}

GrammarLimits LimitsForMaxTokens(int max_tokens) {
  constexpr int kFixedTokens = 20;  // labels, newlines and the score
  constexpr int kMinChars = 16;
  const int chars = std::max(0, max_tokens - kFixedTokens) * 5 / 2;
  GrammarLimits lim;
  lim.extracted_chars = std::max(kMinChars, chars * 40 / 100);
  lim.rationale_chars = std::max(kMinChars, chars * 35 / 100);
  lim.answer_chars = std::max(kMinChars, chars * 25 / 100);
  return lim;
}

std::string StructuredGrammar(const GrammarLimits& limits) {
  return absl::StrCat(
      "root ::= \"Extracted Information: \" extracted \"\\nRationale: \" rationale "
      "\"\\nAnswer: \" answer \"\\nConfidence Score: \" score\n",
      FieldRule("extracted", limits.extracted_chars),
      FieldRule("rationale", limits.rationale_chars), FieldRule("answer", limits.answer_chars),
      "score ::= [0-4] \".\" [0-9] | \"5.0\"\n");
}

std::string ReduceGrammar(const GrammarLimits& limits, bool answer_first) {
  // The reduce answer gets the extracted field's room too: it has no evidence line to write.
  return absl::StrCat(answer_first ? "root ::= \"Answer: \" answer \"\\nRationale: \" rationale\n"
                                   : "root ::= \"Rationale: \" rationale \"\\nAnswer: \" answer\n",
                      FieldRule("rationale", limits.rationale_chars),
                      FieldRule("answer", limits.answer_chars + limits.extracted_chars));
}

}  // namespace loom::pipelines::mapreduce
