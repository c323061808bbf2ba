// Grammar-constrained decoding: a GBNF grammar (llama.cpp's EBNF dialect) compiles once into an
// immutable Grammar; a per-sequence Matcher masks, at every step, the logits of every token that
// cannot continue a string of the grammar, then advances on the chosen token. Token strings are
// indexed once per vocabulary (TokenIndex: a byte trie), and the allowed-token set is cached per
// matcher state, so a step does not test every token string (docs/structured_output.md has the
// design and timings; json_schema.h turns a JSON Schema into GBNF).
//
//   LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const Grammar> g,
//                         Grammar::Parse(R"(root ::= "yes" | "no")"));
//   std::shared_ptr<const TokenIndex> index = TokenIndex::Build(tokenizer);  // once per model
//   Matcher m(g, index);
//   m.MaskLogits(logits);                        // impossible tokens -> -inf
//   int32_t tok = sampler.Sample(logits, history);
//   LOOM_RETURN_IF_ERROR(m.Accept(tok));
//   if (m.IsDone()) ...;                         // nothing but end-of-generation can follow
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace loom::grammar {

// A compiled grammar. Thread-safe to share between sequences (immutable; caches inside are
// synchronised). Supported GBNF: rules `name ::= alternatives`, string literals with escapes
// (\n \t \r \" \\ \xHH \uHHHH \UHHHHHHHH), character classes [a-z] and negated [^...] over
// Unicode code points, `.` (any code point), grouping ( ), alternation |, repetition * + ? and
// {m}, {m,}, {m,n} (bounds up to 10000), comments (#). Left recursion is an InvalidArgument error.
class Grammar {
 public:
  // InvalidArgument with line:column and a message for syntax errors, undefined or twice-defined
  // rules, a missing root rule, left recursion (also a repetition of something that can be
  // empty), or a rule that can never finish. Identical texts return the same compiled grammar
  // (a small cache), so its mask caches stay warm across requests.
  static absl::StatusOr<std::shared_ptr<const Grammar>> Parse(std::string_view gbnf,
                                                              std::string_view root = "root");
  virtual ~Grammar() = default;
  // The grammar's text, normalised (for logs and tests).
  virtual std::string ToString() const = 0;
};

// A GBNF string literal that matches `utf8` exactly (quotes, backslashes and control characters
// escaped), for code that writes grammars: GbnfLiteral("a\"b") is "a\"b" in quotes.
std::string GbnfLiteral(std::string_view utf8);

// The vocabulary as raw byte strings (token id -> bytes the detokenizer emits for it), in a trie.
// Special/control tokens (other than end-of-generation ones) and tokens with no bytes are never
// allowed under a grammar. Immutable; share one per model.
class TokenIndex {
 public:
  static std::shared_ptr<const TokenIndex> Build(const tokenizer::Tokenizer& tokenizer);
  // For tests: explicit token byte strings and end-of-generation ids (other empty strings are
  // special tokens).
  static std::shared_ptr<const TokenIndex> FromStrings(std::vector<std::string> token_bytes,
                                                       std::vector<int32_t> eog_ids);
  virtual ~TokenIndex() = default;
  virtual int32_t vocab_size() const = 0;
};

// One sequence's position in a grammar. Not thread-safe; one per sequence.
class Matcher {
 public:
  Matcher(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const TokenIndex> index);
  ~Matcher();
  Matcher(Matcher&&) noexcept;
  Matcher& operator=(Matcher&&) noexcept;

  // Sets to -inf the logit of every token whose bytes cannot continue the string so far (a token
  // may complete a UTF-8 sequence another token started). End-of-generation tokens stay allowed
  // only where the string so far is a complete sentence of the grammar. `logits` holds one float
  // per token id; entries past the index's vocab_size() (padded model rows) are masked. Never
  // leaves every token masked: when the matcher is done (or the vocabulary cannot spell what
  // the grammar needs next), only the end-of-generation tokens remain; with none, nothing is
  // masked.
  void MaskLogits(std::span<float> logits);
  // Advances on `token`. InvalidArgument if the token was not allowed (the matcher is unchanged).
  // An end-of-generation token is allowed where CanEnd(); afterwards IsDone() and nothing more is.
  absl::Status Accept(int32_t token);
  // The string so far is a complete sentence of the grammar.
  bool CanEnd() const;
  // Complete, and no token can extend it: generation should end now.
  bool IsDone() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::grammar
