// Splitting a long document into chunks that each fit a token budget, by the model's own token
// counts (LLM×MapReduce's map stage reads one chunk per call), and packing consecutive items
// (chunks, or map results for the collapse stage) into groups under a budget.
//
// SplitDocument packs paragraphs (lines) greedily; a paragraph over the budget is cut at sentence
// ends, a sentence over it after commas, a clause over it at spaces, a word over it at a
// token-count boundary. A last chunk under
// half the budget is rebalanced with the one before it. Each piece is counted once and the sums
// decide the packing; every chunk is then counted whole, and one that came out over the budget
// (tokens merge across piece boundaries) is split again, so the budget always holds.
//
//   TokenCounter count = SequentialCounter([&](std::string_view s) { return gen.CountTokens(s); });
//   LOOM_ASSIGN_OR_RETURN(std::vector<Chunk> chunks, SplitDocument(document, 1500, count));
//   for (const Chunk& c : chunks) Map(c.text);  // c.tokens <= 1500
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::pipelines::mapreduce {

// Counts the tokens of each text (no special tokens); may count them concurrently. The result
// has one count per text, in order.
using TokenCounter =
    std::function<absl::StatusOr<std::vector<int>>(const std::vector<std::string_view>& texts)>;

// A TokenCounter that calls `count` on each text in turn.
TokenCounter SequentialCounter(std::function<absl::StatusOr<int>(std::string_view)> count);

struct Chunk {
  std::string text;
  int tokens = 0;                // the whole text, counted once more after packing
  bool starts_paragraph = true;  // false: continues the previous chunk's paragraph
};

// Splits `document` into chunks of at most `budget` tokens. Blank (whitespace-only) lines are
// dropped; otherwise nothing is lost: joining the chunks, with "\n" before each that
// starts_paragraph (but the first), gives the document without its blank lines. InvalidArgument
// for budget < 1; a counter's error is returned as is.
absl::StatusOr<std::vector<Chunk>> SplitDocument(std::string_view document, int budget,
                                                 const TokenCounter& count);

// Cuts `text` after each sentence end (. ! ? ; and the CJK 。！？；, followed by white space or the
// end), keeping the white space with the sentence before it. The pieces concatenate to `text`.
std::vector<std::string_view> SplitSentences(std::string_view text);
// Cuts `text` after each comma followed by white space (kept with the clause before): a JSON
// object's `"key": "value", ` pairs stay whole. Concatenates to `text`.
std::vector<std::string_view> SplitClauses(std::string_view text);
// Cuts `text` after each run of spaces (kept with the word before). Concatenates to `text`.
std::vector<std::string_view> SplitWords(std::string_view text);

// Groups consecutive items into as few groups as the greedy rule makes: an item joins the current
// group while the group's counts plus `separator_tokens` between items stay within `budget`.
// Returns item indices per group. FailedPrecondition when a single item is over the budget.
absl::StatusOr<std::vector<std::vector<int>>> PackConsecutive(std::span<const int> counts,
                                                              int budget, int separator_tokens);

}  // namespace loom::pipelines::mapreduce
