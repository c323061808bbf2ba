#include "pipelines/mapreduce/protocol.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/grammar/grammar.h"

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

// A free-text field of at most `chars` characters, not starting with a space. With codes, a
// digit only inside a whole code (each code counts as one character of the bound).
std::string FieldRule(std::string_view name, int chars, const std::vector<std::string>* codes) {
  const int rest = std::max(chars, 1) - 1;
  if (codes == nullptr) {
    return absl::StrCat(std::string(name), " ::= [^\\n ] [^\\n]{0,", rest, "}\n");
  }
  if (codes->empty()) {
    return absl::StrCat(std::string(name), " ::= [^\\n 0-9] [^\\n0-9]{0,", rest, "}\n");
  }
  return absl::StrCat(std::string(name), " ::= ([^\\n 0-9] | code) ([^\\n0-9] | code){0,", rest,
                      "}\n");
}

// `code ::= "..." | ...` when there are codes.
std::string CodeRule(const std::vector<std::string>* codes) {
  if (codes == nullptr || codes->empty()) return "";
  std::string out = "code ::= ";
  for (size_t i = 0; i < codes->size(); ++i)
    absl::StrAppend(&out, i ? " | " : "", grammar::GbnfLiteral((*codes)[i]));
  out += "\n";
  return out;
}

// A field that is one of `choices` or [NO INFORMATION]; free text (FieldRule) without choices.
std::string ChoiceRule(std::string_view name, int chars, const CopySource* copy,
                       const std::vector<std::string>* choices) {
  if (copy == nullptr || choices == nullptr || choices->empty()) {
    return FieldRule(name, chars, copy ? &copy->codes : nullptr);
  }
  std::string out = absl::StrCat(std::string(name), " ::= ");
  for (const std::string& s : *choices) {
    if (s != kNoInformation) absl::StrAppend(&out, grammar::GbnfLiteral(s), " | ");
  }
  absl::StrAppend(&out, grammar::GbnfLiteral(kNoInformation), "\n");
  return out;
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
      "the",   "and",  "are",   "was",  "were", "what",  "which",  "who",   "whom", "whose",
      "where", "when", "why",   "how",  "this", "that",  "these",  "those", "for",  "with",
      "from",  "does", "did",   "has",  "have", "had",   "its",    "his",   "her",  "their",
      "our",   "your", "you",   "can",  "will", "would", "should", "could", "not",  "but",
      "all",   "any",  "about", "into", "than", "then",  "there",  "they",  "them", "she",
      "him",   "been", "being", "some", "such", "only"};
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
  // A hyphen between letters or digits joins a word ("3e2adb43-525e" is not a copy of a UUID).
  auto joined_after = [&](size_t p) {
    return p < src.size() &&
           (alnum(src[p]) || (src[p] == '-' && p + 1 < src.size() && alnum(src[p + 1])));
  };
  auto joined_before = [&](size_t p) {  // the character before p
    return p > 0 && (alnum(src[p - 1]) || (src[p - 1] == '-' && p >= 2 && alnum(src[p - 2])));
  };
  for (size_t at = src.find(answer); at != std::string::npos; at = src.find(answer, at + 1)) {
    const size_t end = at + answer.size();
    if ((!joined_before(at) || !alnum(answer.front())) &&
        (!joined_after(end) || !alnum(answer.back()))) {
      return true;
    }
  }
  return false;
}

namespace {

// The words of `text` as RepeatsQuestion sees them: runs of letters and digits joined by inner
// hyphens, lower case, each with where it starts and ends in `text`.
struct Word {
  std::string lower;
  size_t begin, end;
};
std::vector<Word> Words(std::string_view text) {
  auto alnum = [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); };
  std::vector<Word> out;
  for (size_t i = 0; i < text.size();) {
    if (!alnum(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() &&
           (alnum(text[j]) || (text[j] == '-' && j + 1 < text.size() && alnum(text[j + 1])))) {
      ++j;
    }
    out.push_back({Lower(text.substr(i, j - i)), i, j});
    i = j;
  }
  return out;
}

bool InQuestion(const Word& w, const std::vector<Word>& question) {
  return std::any_of(question.begin(), question.end(),
                     [&](const Word& q) { return q.lower.find(w.lower) != std::string::npos; });
}

}  // namespace

bool RepeatsQuestion(std::string_view answer, std::string_view question) {
  const std::vector<Word> words = Words(answer);
  const std::vector<Word> q = Words(question);
  return !words.empty() &&
         std::all_of(words.begin(), words.end(), [&](const Word& w) { return InQuestion(w, q); });
}

std::string NewInformation(std::string_view evidence, std::string_view question) {
  const std::vector<Word> q = Words(question);
  std::string out;
  size_t from = 0;  // start of the text not yet copied
  for (const Word& w : Words(evidence)) {
    if (!InQuestion(w, q)) continue;
    out.append(evidence.substr(from, w.begin - from));
    from = w.end;
  }
  out.append(evidence.substr(from));
  auto edge = [](char c) { return !absl::ascii_isalnum(static_cast<unsigned char>(c)); };
  size_t b = 0, e = out.size();
  while (b < e && edge(out[b])) ++b;
  while (e > b && edge(out[e - 1])) --e;
  std::string trimmed = out.substr(b, e - b);
  // Runs of white space left where words were cut, as one space.
  std::string result;
  for (char c : trimmed) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) && !result.empty() &&
        result.back() == ' ') {
      continue;
    }
    result += absl::ascii_isspace(static_cast<unsigned char>(c)) ? ' ' : c;
  }
  return result;
}

bool CapUnlessLiteral(ChunkResult* r, std::string_view source, double cap) {
  if (r->confidence <= cap || AnswerIsLiteral(*r, source)) return false;
  r->confidence = cap;
  return true;
}

namespace {

// How many distinct words of the question (letters and digits, 3 or more, lower case, not a
// function word) `text` has. Both are normalized.
int CountQuestionWords(std::string_view text, std::string_view q) {
  std::vector<std::string_view> seen;
  int n = 0;
  for (size_t i = 0; i < q.size();) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(q[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < q.size() && absl::ascii_isalnum(static_cast<unsigned char>(q[j]))) ++j;
    const std::string_view word = q.substr(i, j - i);
    i = j;
    if (word.size() < 3 || IsStopWord(word) ||
        std::find(seen.begin(), seen.end(), word) != seen.end()) {
      continue;
    }
    seen.push_back(word);
    n += ContainsWord(text, word);
  }
  return n;
}

}  // namespace

void MarkGrounded(ChunkResult* r, std::string_view source, std::string_view question) {
  r->grounded = false;
  r->question_words = 0;
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
    if (piece.size() < 12 || src.find(piece) == std::string::npos) continue;
    const int words = CountQuestionWords(piece, q);
    if (words > 0) {
      r->grounded = true;
      r->question_words = std::max(r->question_words, words);
    }
  }
}

void SortForReading(std::vector<ChunkResult>* results) {
  std::stable_sort(results->begin(), results->end(),
                   [](const ChunkResult& a, const ChunkResult& b) {
                     if (a.grounded != b.grounded) return a.grounded;
                     if (a.question_words != b.question_words) {
                       return a.question_words > b.question_words;
                     }
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

std::string StructuredGrammar(const GrammarLimits& limits, const CopySource* copy) {
  const std::vector<std::string>* codes = copy ? &copy->codes : nullptr;
  return absl::StrCat(
      "root ::= \"Extracted Information: \" extracted \"\\nRationale: \" rationale "
      "\"\\nAnswer: \" answer \"\\nConfidence Score: \" score\n",
      ChoiceRule("extracted", limits.extracted_chars, copy, copy ? &copy->sentences : nullptr),
      FieldRule("rationale", limits.rationale_chars, codes),
      ChoiceRule("answer", limits.answer_chars, copy, copy ? &copy->answers : nullptr),
      CodeRule(codes), "score ::= [0-4] \".\" [0-9] | \"5.0\"\n");
}

std::string ReduceGrammar(const GrammarLimits& limits, bool answer_first, const CopySource* copy) {
  const std::vector<std::string>* codes = copy ? &copy->codes : nullptr;
  // The reduce answer gets the extracted field's room too: it has no evidence line to write.
  return absl::StrCat(answer_first ? "root ::= \"Answer: \" answer \"\\nRationale: \" rationale\n"
                                   : "root ::= \"Rationale: \" rationale \"\\nAnswer: \" answer\n",
                      FieldRule("rationale", limits.rationale_chars, codes),
                      ChoiceRule("answer", limits.answer_chars + limits.extracted_chars, copy,
                                 copy ? &copy->answers : nullptr),
                      CodeRule(codes));
}

std::vector<std::string> Codes(std::string_view text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    size_t j = i;
    while (j < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) out.emplace_back(text.substr(i, j - i));
    i = std::max(j, i + 1);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::string> Sentences(std::string_view text, int max_chars) {
  std::vector<std::string> out;
  std::string cur;
  auto add = [&](std::string piece) {
    if (static_cast<int>(piece.size()) > max_chars) {
      const size_t cut = piece.rfind(' ', max_chars);
      piece.resize(cut == std::string::npos || cut == 0 ? max_chars : cut);
      // Never end inside a UTF-8 sequence.
      while (!piece.empty() && (static_cast<unsigned char>(piece.back()) & 0xC0) == 0x80) {
        piece.pop_back();
      }
      if (!piece.empty() && static_cast<unsigned char>(piece.back()) >= 0xC0) piece.pop_back();
    }
    if (!piece.empty() && std::find(out.begin(), out.end(), piece) == out.end()) {
      out.push_back(std::move(piece));
    }
  };
  auto flush = [&] {
    while (!cur.empty() && cur.back() == ' ') cur.pop_back();
    if (static_cast<int>(cur.size()) <= max_chars) {
      add(std::move(cur));
    } else {
      // Too long (or no sentences at all, as in a JSON object): each clause, split after ", "
      // or "; ", on its own.
      size_t begin = 0;
      for (size_t i = 0; i + 1 < cur.size(); ++i) {
        if ((cur[i] == ',' || cur[i] == ';') && cur[i + 1] == ' ') {
          add(cur.substr(begin, i + 1 - begin));
          begin = i + 2;
        }
      }
      add(cur.substr(begin));
    }
    cur.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {  // a line ends a sentence too: a needle may follow a hard-wrapped line
      flush();
      continue;
    }
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      if (!cur.empty() && cur.back() != ' ') cur += ' ';
      continue;
    }
    cur += c;
    if ((c == '.' || c == '!' || c == '?') &&
        (i + 1 == text.size() || absl::ascii_isspace(static_cast<unsigned char>(text[i + 1])))) {
      flush();
    }
  }
  flush();
  return out;
}

}  // namespace loom::pipelines::mapreduce
