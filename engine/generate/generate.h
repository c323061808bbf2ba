// One sequence's generation loop on a backend: prefill the prompt, then sample token by token until
// max_tokens, an end-of-generation token or a stop string. The serving engine batches many of these;
// this single-sequence form serves the CLI, the benchmark and the model tests.
//
//   loom::engine::GenerateOptions opts;
//   opts.max_tokens = 64;
//   opts.sampling.temperature = 0;  // greedy
//   LOOM_ASSIGN_OR_RETURN(loom::engine::GenerateResult r,
//       loom::engine::Generate(*backend, *tokenizer, kv, prompt_ids, opts,
//                              [](const loom::engine::TokenEvent& ev) { std::cout << ev.text; return true; }));
//   // r.finish_reason is "stop" or "length"; r.prefill_seconds / r.decode_seconds give speed.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
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
  double decode_seconds = 0;  // from the first sampled token to the last
};

// `on_token` returns false to stop early (finish_reason "stop"). `kv` must be empty or hold a
// prefix of `prompt`; generation continues after it.
absl::StatusOr<GenerateResult> Generate(Backend& backend, const tokenizer::Tokenizer& tokenizer,
                                        KvSequence& kv, std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<bool(const TokenEvent&)>& on_token);

}  // namespace loom::engine
