#include "pipelines/mapreduce/split.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace loom::pipelines::mapreduce {
namespace {

// One indivisible piece of the document as the packer sees it.
struct Atom {
  std::string_view text;
  int tokens = 0;
  bool para_start = false;  // joined to the atom before it with "\n" (else directly)
};

// A chunk as a range of atoms [begin, end).
struct Range {
  size_t begin = 0;
  size_t end = 0;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f'; }

bool IsBlank(std::string_view s) { return std::all_of(s.begin(), s.end(), IsSpace); }

// Length of the CJK sentence-ending mark at s[i] (0 if none).
size_t CjkSentenceEnd(std::string_view s, size_t i) {
  if (i + 3 > s.size()) return 0;
  const std::string_view m = s.substr(i, 3);
  if (m == "\xE3\x80\x82" || m == "\xEF\xBC\x81" || m == "\xEF\xBC\x9F" || m == "\xEF\xBC\x9B") {
    return 3;
  }
  return 0;
}

// Start of the UTF-8 code point that contains byte i (or i itself at a boundary).
size_t CodePointStart(std::string_view s, size_t i) {
  while (i > 0 && i < s.size() && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

size_t NextCodePoint(std::string_view s, size_t i) {
  ++i;
  while (i < s.size() && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) ++i;
  return i;
}

absl::StatusOr<int> CountOne(const TokenCounter& count, std::string_view text) {
  LOOM_ASSIGN_OR_RETURN(std::vector<int> n, count({text}));
  if (n.size() != 1) return absl::InternalError("the token counter returned the wrong count");
  return n[0];
}

absl::StatusOr<std::vector<int>> CountAll(const TokenCounter& count,
                                          const std::vector<std::string_view>& texts) {
  if (texts.empty()) return std::vector<int>();
  LOOM_ASSIGN_OR_RETURN(std::vector<int> n, count(texts));
  if (n.size() != texts.size()) {
    return absl::InternalError("the token counter returned the wrong number of counts");
  }
  return n;
}

// Cuts a piece with no usable boundary into prefixes of at most `budget` tokens (binary search on
// the byte length, at code point boundaries). Always progresses by at least one code point.
absl::Status HardSplit(std::string_view text, bool para_start, int budget,
                       const TokenCounter& count, std::vector<Atom>* out) {
  while (!text.empty()) {
    LOOM_ASSIGN_OR_RETURN(int whole, CountOne(count, text));
    if (whole <= budget) {
      out->push_back({text, whole, para_start});
      return absl::OkStatus();
    }
    size_t lo = NextCodePoint(text, 0);  // always taken
    size_t hi = text.size();             // known to be over
    LOOM_ASSIGN_OR_RETURN(int lo_tokens, CountOne(count, text.substr(0, lo)));
    while (true) {
      const size_t mid = CodePointStart(text, lo + (hi - lo) / 2);
      if (mid <= lo || mid >= hi) break;
      LOOM_ASSIGN_OR_RETURN(int n, CountOne(count, text.substr(0, mid)));
      if (n <= budget) {
        lo = mid;
        lo_tokens = n;
      } else {
        hi = mid;
      }
    }
    out->push_back({text.substr(0, lo), lo_tokens, para_start});
    text.remove_prefix(lo);
    para_start = false;
  }
  return absl::OkStatus();
}

// Replaces every atom over `budget` by its pieces from `splitter` (counted in one batch). The
// first piece keeps the atom's para_start.
absl::Status RefineLevel(std::vector<Atom>* atoms, int budget, const TokenCounter& count,
                         std::vector<std::string_view> (*splitter)(std::string_view)) {
  std::vector<std::vector<std::string_view>> pieces(atoms->size());
  std::vector<std::string_view> to_count;
  for (size_t i = 0; i < atoms->size(); ++i) {
    if ((*atoms)[i].tokens <= budget) continue;
    pieces[i] = splitter((*atoms)[i].text);
    if (pieces[i].size() <= 1) {
      pieces[i].clear();  // nothing to cut here; the next level will try
      continue;
    }
    to_count.insert(to_count.end(), pieces[i].begin(), pieces[i].end());
  }
  if (to_count.empty()) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(std::vector<int> counts, CountAll(count, to_count));
  std::vector<Atom> out;
  size_t next = 0;
  for (size_t i = 0; i < atoms->size(); ++i) {
    if (pieces[i].empty()) {
      out.push_back((*atoms)[i]);
      continue;
    }
    for (size_t j = 0; j < pieces[i].size(); ++j) {
      out.push_back({pieces[i][j], counts[next++], j == 0 && (*atoms)[i].para_start});
    }
  }
  *atoms = std::move(out);
  return absl::OkStatus();
}

// Sentences, then clauses, then words, then hard cuts, until every atom is within the budget.
absl::Status Refine(std::vector<Atom>* atoms, int budget, const TokenCounter& count) {
  LOOM_RETURN_IF_ERROR(RefineLevel(atoms, budget, count, &SplitSentences));
  LOOM_RETURN_IF_ERROR(RefineLevel(atoms, budget, count, &SplitClauses));
  LOOM_RETURN_IF_ERROR(RefineLevel(atoms, budget, count, &SplitWords));
  if (std::none_of(atoms->begin(), atoms->end(),
                   [&](const Atom& a) { return a.tokens > budget; })) {
    return absl::OkStatus();
  }
  std::vector<Atom> out;
  for (const Atom& a : *atoms) {
    if (a.tokens <= budget) {
      out.push_back(a);
    } else {
      LOOM_RETURN_IF_ERROR(HardSplit(a.text, a.para_start, budget, count, &out));
    }
  }
  *atoms = std::move(out);
  return absl::OkStatus();
}

// Estimated tokens of atoms [b, e) as one chunk.
int64_t Estimate(const std::vector<Atom>& atoms, size_t b, size_t e, int sep) {
  int64_t total = 0;
  for (size_t i = b; i < e; ++i)
    total += atoms[i].tokens + (i > b && atoms[i].para_start ? sep : 0);
  return total;
}

std::string Join(const std::vector<Atom>& atoms, size_t b, size_t e) {
  std::string s;
  for (size_t i = b; i < e; ++i) {
    if (i > b && atoms[i].para_start) s += '\n';
    s.append(atoms[i].text);
  }
  return s;
}

std::vector<Range> Pack(const std::vector<Atom>& atoms, int budget, int sep) {
  std::vector<Range> out;
  size_t begin = 0;
  int64_t total = 0;
  for (size_t i = 0; i < atoms.size(); ++i) {
    const int64_t add = atoms[i].tokens + (i > begin && atoms[i].para_start ? sep : 0);
    if (i > begin && total + add > budget) {
      out.push_back({begin, i});
      begin = i;
      total = atoms[i].tokens;
    } else {
      total += add;
    }
  }
  if (begin < atoms.size()) out.push_back({begin, atoms.size()});
  return out;
}

// The cut k in (b, e) that splits [b, e) into two estimated halves within the budget, with the
// smaller larger half; `fallback` when none fits.
size_t BalancedCut(const std::vector<Atom>& atoms, size_t b, size_t e, int budget, int sep,
                   size_t fallback) {
  size_t best = fallback;
  int64_t best_max = -1;
  for (size_t k = b + 1; k < e; ++k) {
    const int64_t left = Estimate(atoms, b, k, sep);
    const int64_t right = Estimate(atoms, k, e, sep);
    if (left > budget || right > budget) continue;
    if (best_max < 0 || std::max(left, right) < best_max) {
      best = k;
      best_max = std::max(left, right);
    }
  }
  return best;
}

// Moves the boundary between the last two chunks so that both are about equally long, when the
// last is under half the budget. Whole paragraphs in those chunks are cut into sentences first,
// so the boundary can fall inside one.
absl::Status Rebalance(std::vector<Atom>* atoms, std::vector<Range>* ranges, int budget, int sep,
                       const TokenCounter& count) {
  if (ranges->size() < 2) return absl::OkStatus();
  const Range last = ranges->back();
  const Range prev = (*ranges)[ranges->size() - 2];
  if (Estimate(*atoms, last.begin, last.end, sep) >= budget / 2) return absl::OkStatus();

  // Sentence-level atoms for the two chunks.
  std::vector<Atom> tail(atoms->begin() + prev.begin, atoms->end());
  std::vector<std::vector<std::string_view>> pieces(tail.size());
  std::vector<std::string_view> to_count;
  for (size_t i = 0; i < tail.size(); ++i) {
    pieces[i] = SplitSentences(tail[i].text);
    if (pieces[i].size() <= 1) {
      pieces[i].clear();
    } else {
      to_count.insert(to_count.end(), pieces[i].begin(), pieces[i].end());
    }
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<int> counts, CountAll(count, to_count));
  std::vector<Atom> fine;
  size_t original_cut = 0;  // index in `fine` of the old boundary
  size_t next = 0;
  for (size_t i = 0; i < tail.size(); ++i) {
    if (prev.begin + i == last.begin) original_cut = fine.size();
    if (pieces[i].empty()) {
      fine.push_back(tail[i]);
      continue;
    }
    for (size_t j = 0; j < pieces[i].size(); ++j) {
      fine.push_back({pieces[i][j], counts[next++], j == 0 && tail[i].para_start});
    }
  }
  const size_t cut = BalancedCut(fine, 0, fine.size(), budget, sep, original_cut);
  atoms->resize(prev.begin);
  atoms->insert(atoms->end(), fine.begin(), fine.end());
  ranges->pop_back();
  ranges->back() = {prev.begin, prev.begin + cut};
  ranges->push_back({prev.begin + cut, atoms->size()});
  return absl::OkStatus();
}

// Counts [b, e) whole; a range over the budget is cut in two and each half checked again (a
// single atom was counted exactly, so it always fits).
absl::Status Verify(const std::vector<Atom>& atoms, Range r, int known_tokens, int budget, int sep,
                    const TokenCounter& count, std::vector<Chunk>* out) {
  if (known_tokens <= budget || r.end - r.begin <= 1) {
    out->push_back({Join(atoms, r.begin, r.end), known_tokens, atoms[r.begin].para_start});
    return absl::OkStatus();
  }
  const size_t mid =
      BalancedCut(atoms, r.begin, r.end, budget, sep, r.begin + (r.end - r.begin) / 2);
  for (const Range half : {Range{r.begin, mid}, Range{mid, r.end}}) {
    LOOM_ASSIGN_OR_RETURN(int n, CountOne(count, Join(atoms, half.begin, half.end)));
    LOOM_RETURN_IF_ERROR(Verify(atoms, half, n, budget, sep, count, out));
  }
  return absl::OkStatus();
}

}  // namespace

TokenCounter SequentialCounter(std::function<absl::StatusOr<int>(std::string_view)> count) {
  return [count = std::move(count)](
             const std::vector<std::string_view>& texts) -> absl::StatusOr<std::vector<int>> {
    std::vector<int> out;
    out.reserve(texts.size());
    for (std::string_view t : texts) {
      LOOM_ASSIGN_OR_RETURN(int n, count(t));
      out.push_back(n);
    }
    return out;
  };
}

std::vector<std::string_view> SplitSentences(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t end = 0;
    const char c = text[i];
    if (c == '.' || c == '!' || c == '?' || c == ';') {
      if (i + 1 == text.size() || IsSpace(text[i + 1])) end = i + 1;
    } else if (const size_t n = CjkSentenceEnd(text, i); n > 0) {
      end = i + n;
    }
    if (end == 0) {
      ++i;
      continue;
    }
    while (end < text.size() && IsSpace(text[end])) ++end;
    out.push_back(text.substr(start, end - start));
    start = i = end;
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

std::vector<std::string_view> SplitClauses(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != ',' || !IsSpace(text[i + 1])) continue;
    size_t end = i + 1;
    while (end < text.size() && IsSpace(text[end])) ++end;
    out.push_back(text.substr(start, end - start));
    start = end;
    i = end - 1;
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

std::vector<std::string_view> SplitWords(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!IsSpace(text[i])) {
      ++i;
      continue;
    }
    while (i < text.size() && IsSpace(text[i])) ++i;
    out.push_back(text.substr(start, i - start));
    start = i;
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

absl::StatusOr<std::vector<Chunk>> SplitDocument(std::string_view document, int budget,
                                                 const TokenCounter& count) {
  if (budget < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the chunk budget is ", budget, " tokens"));
  }
  std::vector<Atom> atoms;
  for (size_t start = 0; start <= document.size();) {
    size_t nl = document.find('\n', start);
    if (nl == std::string_view::npos) nl = document.size();
    const std::string_view line = document.substr(start, nl - start);
    if (!IsBlank(line)) atoms.push_back({line, 0, true});
    start = nl + 1;
  }
  if (atoms.empty()) return std::vector<Chunk>();
  std::vector<std::string_view> texts;
  texts.reserve(atoms.size() + 1);
  for (const Atom& a : atoms) texts.push_back(a.text);
  texts.push_back("\n");
  LOOM_ASSIGN_OR_RETURN(std::vector<int> counts, CountAll(count, texts));
  for (size_t i = 0; i < atoms.size(); ++i) atoms[i].tokens = counts[i];
  const int sep = counts.back();

  LOOM_RETURN_IF_ERROR(Refine(&atoms, budget, count));
  std::vector<Range> ranges = Pack(atoms, budget, sep);
  LOOM_RETURN_IF_ERROR(Rebalance(&atoms, &ranges, budget, sep, count));

  std::vector<std::string> joined;
  joined.reserve(ranges.size());
  for (const Range& r : ranges) joined.push_back(Join(atoms, r.begin, r.end));
  std::vector<std::string_view> views(joined.begin(), joined.end());
  LOOM_ASSIGN_OR_RETURN(std::vector<int> whole, CountAll(count, views));
  std::vector<Chunk> out;
  for (size_t i = 0; i < ranges.size(); ++i) {
    LOOM_RETURN_IF_ERROR(Verify(atoms, ranges[i], whole[i], budget, sep, count, &out));
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<int>>> PackConsecutive(std::span<const int> counts,
                                                              int budget, int separator_tokens) {
  std::vector<std::vector<int>> groups;
  int64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > budget) {
      return absl::FailedPreconditionError(absl::StrCat(
          "item ", i, " alone has ", counts[i], " tokens, over the budget of ", budget, " tokens"));
    }
    const int64_t add =
        counts[i] + (groups.empty() || groups.back().empty() ? 0 : separator_tokens);
    if (groups.empty() || total + add > budget) {
      groups.push_back({static_cast<int>(i)});
      total = counts[i];
    } else {
      groups.back().push_back(static_cast<int>(i));
      total += add;
    }
  }
  return groups;
}

}  // namespace loom::pipelines::mapreduce
