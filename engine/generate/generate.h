// One sequence's generation loop on a backend: prefill the prompt, then sample token by token until
// max_tokens, an end-of-generation token or a stop string. The serving engine batches many of
// these; this single-sequence form serves the CLI, the benchmark and the model tests.
//
//   loom::engine::GenerateOptions opts;
//   opts.max_tokens = 64;
//   opts.sampling.temperature = 0;  // greedy
//   LOOM_ASSIGN_OR_RETURN(loom::engine::GenerateResult r,
//       loom::engine::Generate(*backend, *tokenizer, kv, prompt_ids, opts,
//                              [](const loom::engine::TokenEvent& ev) { std::cout << ev.text;
//                              return true; }));
//   // r.finish_reason is "stop" or "length"; r.prefill_seconds / r.decode_seconds give speed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/grammar/grammar.h"
#include "engine/model/backend.h"
#include "engine/sampler/sampler.h"
#include "engine/tokenizer/tokenizer.h"

namespace loom::engine {

struct GenerateOptions {
  int max_tokens = 256;
  sampler::SamplingParams sampling;
  uint64_t default_seed = 0;
  bool stop_at_eog = true;
  std::vector<std::string> stop;  // stop strings; the text is cut before the match
  int prefill_chunk = 512;        // prompt tokens per forward call
  // Grammar-constrained decoding (engine/grammar): each step samples only among the tokens that
  // keep the text a prefix of the grammar (end-of-generation only once it is complete), and
  // generation stops ("stop") as soon as nothing but the end can follow.
  std::shared_ptr<const grammar::Grammar> grammar;
  // The vocabulary's index for `grammar`; built from the tokenizer when null (~20 ms for 49k
  // tokens: pass one when generating repeatedly).
  std::shared_ptr<const grammar::TokenIndex> grammar_index;
};

struct TokenEvent {
  int32_t token = 0;
  std::string_view text;  // complete UTF-8 released by this token (may be empty)
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (without the prompt)
  std::string text;
  std::string finish_reason;  // "stop" or "length"
  int prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;   // from the first sampled token to the last
  double grammar_seconds = 0;  // of decode_seconds, in masking and advancing the grammar
};

// `on_token` returns false to stop early (finish_reason "stop"). `kv` must be empty or hold a
// prefix of `prompt`; generation continues after it. Internal error if the grammar rejects the
// token it allowed (a bug).
absl::StatusOr<GenerateResult> Generate(Backend& backend, const tokenizer::Tokenizer& tokenizer,
                                        KvSequence& kv, std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<bool(const TokenEvent&)>& on_token);

}  // namespace loom::engine
