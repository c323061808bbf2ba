// LLM×MapReduce's structured information protocol: what the map and collapse calls answer
//
//   Extracted Information: <facts from the chunk that bear on the question>
//   Rationale: <how they answer it, what is missing>
//   Answer: <the answer, or [NO INFORMATION]>
//   Confidence Score: <0.0-5.0>
//
// and what the reduce call answers (Rationale and Answer only). The GBNF grammars here make the
// model's output always parse: one line per field, each field bounded in characters (so that even
// a tiny model that would ramble ends within max_tokens), the score a number from 0.0 to 5.0 with
// one decimal. The parsers also accept free text that roughly follows the format (for servers that
// ignore the grammar).
//
//   const GrammarLimits lim = LimitsForMaxTokens(300);
//   call.grammar = StructuredGrammar(lim);
//   ChunkResult r = ParseChunkResult(output.text, /*index=*/3);
//   if (!r.no_information) evidence.push_back(r);
//   std::string context = FormatEvidence(evidence);  // "Part 1:\nExtracted Information: ..."
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace loom::pipelines::mapreduce {

inline constexpr char kNoInformation[] = "[NO INFORMATION]";

// One map (or collapse) output.
struct ChunkResult {
  int index = 0;  // the chunk (map) or group (collapse) it came from
  std::string extracted;
  std::string rationale;
  std::string answer;
  double confidence = 0;        // 0..5
  bool no_information = false;  // the answer says kNoInformation
  bool parsed = false;          // every field and a score were found; else the raw text is kept
                                // in `extracted` and the score is 0
  bool grounded = false;        // `extracted` appears word for word in what the call read
                                // (MarkGrounded)
  bool answer_literal = false;  // `answer` appears word for word in what the call read
                                // (AnswerIsLiteral)
  int question_words = 0;       // of a grounded result: the most question words one of its
                                // copied sentences holds (MarkGrounded)
};

// The reduce output.
struct ReduceOutput {
  std::string rationale;
  std::string answer;
  bool parsed = false;  // both fields found; else the whole text is the answer
};

// Case-insensitive: does `answer` contain kNoInformation?
bool IsNoInformation(std::string_view answer);

ChunkResult ParseChunkResult(std::string_view text, int index);
ReduceOutput ParseReduceOutput(std::string_view text);

// Whether r.answer appears word for word in `source` (the chunk it came from, or the notes a
// collapse read; case, white space runs, quotes and a trailing period are ignored), at word
// boundaries (a digit dropped from a number is no copy). Never for [NO INFORMATION] or an empty
// answer.
bool AnswerIsLiteral(const ChunkResult& r, std::string_view source);

// Whether every word of `answer` (letters, digits and inner hyphens) occurs in `question`,
// ignoring case: the answer only repeats what was asked (a key instead of its value). False
// for an empty answer.
bool RepeatsQuestion(std::string_view answer, std::string_view question);
// `evidence` without its words that occur in `question` (as RepeatsQuestion compares them),
// trimmed of white space and punctuation at both ends: what it says that the question did not
// ("The pass key is 71432." -> "71432"; "\"<key>\": \"<value>\"," -> "<value>").
std::string NewInformation(std::string_view evidence, std::string_view question);

// In-context calibration, checked: a score above `cap` stands only when AnswerIsLiteral.
// Otherwise the score drops to `cap`. Returns true when it capped.
bool CapUnlessLiteral(ChunkResult* r, std::string_view source, double cap);

// Sets r->grounded: a sentence of the Extracted Information, which the prompts ask to copy
// exactly, is found word for word in `source` (the chunk, or the notes a collapse read; compared as
// CapUnlessLiteral does), is at least 12 characters, and shares a word of three or more letters,
// other than a function word (the, what, ...), with `question` (so a copied but unrelated sentence
// does not count); [NO INFORMATION] is never grounded. Sentence by sentence, because a small model
// often copies the right sentence and then rambles on. A small model's
// scores say little (SmolLM2-135M scored its correct pass-key notes 0.0 and invented ones 4.5),
// but whether it copied or invented its evidence can be checked.
void MarkGrounded(ChunkResult* r, std::string_view source, std::string_view question);

// The order in which collapse and reduce prompts list results: grounded ones first, those by
// question_words ("The pass key is 10297." holds "pass" and "key", a copied "The key to this
// mystery ..." only "key"), then by confidence, all descending; ties keep document order
// (stable).
void SortForReading(std::vector<ChunkResult>* results);

// The four protocol lines of a result (the score with one decimal).
std::string FormatChunkResult(const ChunkResult& r);
// One result as it appears in a collapse or reduce prompt: a "Part N:" header (N = position + 1),
// the four lines, and a blank line.
std::string FormatEvidenceItem(const ChunkResult& r, int position);
// All of them, concatenated.
std::string FormatEvidence(const std::vector<ChunkResult>& results);

// Character bounds on each free-text field of the output.
struct GrammarLimits {
  int extracted_chars = 0;
  int rationale_chars = 0;
  int answer_chars = 0;
};
// Bounds that keep a whole output within `max_tokens` tokens at about 2.5 characters per token
// (the labels and the score take about 20 tokens); at least 16 characters per field.
GrammarLimits LimitsForMaxTokens(int max_tokens);
// What a call may copy from what it read (MapReduceOptions::values, docs/mapreduce.md).
struct CopySource {
  // The Extracted Information is one of these, written whole, or [NO INFORMATION] (when empty,
  // it is free text under `codes`).
  std::vector<std::string> sentences;
  // The Answer is one of these, written whole, or [NO INFORMATION] (when empty, it is free text
  // under `codes`): a collapse or reduce call picks among the answers it read.
  std::vector<std::string> answers;
  // In the other free-text fields (and in free-text Extracted Information or Answer), a digit
  // appears only inside one of these runs of digits, written whole: a model copying a value
  // cannot drop, add or invent a digit; one that read no digit cannot write one.
  std::vector<std::string> codes;
};
// The sentences of `text` (split after '.', '!' or '?' and white space, and at line ends, since a
// sentence may follow a hard-wrapped line; white space runs as one space), each once, in order.
// A sentence over `max_chars` bytes (a JSON object has no sentence ends) gives its clauses
// instead (split after ", " or "; "), each cut at a word boundary to at most `max_chars` bytes.
std::vector<std::string> Sentences(std::string_view text, int max_chars);
// The maximal runs of ASCII digits in `text`, each once, sorted.
std::vector<std::string> Codes(std::string_view text);
// The map/collapse output: the four lines, nothing after the score; with `copy`, what it may
// copy (CopySource).
std::string StructuredGrammar(const GrammarLimits& limits, const CopySource* copy = nullptr);
// The reduce output: "Rationale: ...\nAnswer: ...", or with `answer_first` "Answer: ...\nRationale:
// ..." (ReduceAnswerFirst).
// With `copy`, its answers and codes as in StructuredGrammar (not its sentences).
std::string ReduceGrammar(const GrammarLimits& limits, bool answer_first = false,
                          const CopySource* copy = nullptr);

}  // namespace loom::pipelines::mapreduce
