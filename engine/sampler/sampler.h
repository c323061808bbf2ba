// Token sampler: turns one step's logits into the next token, following llama.cpp's common sampler
// chain (penalties -> top_k -> top_p -> min_p -> temperature -> draw), and computes OpenAI-style
// log-probabilities. Pure code, no model; a Sampler allocates nothing per token once warmed up.
//
//   loom::sampler::SamplingParams params;
//   params.temperature = 0.7f;
//   params.top_p = 0.9f;
//   LOOM_RETURN_IF_ERROR(params.Validate());
//   loom::sampler::Sampler sampler(params, /*default_seed=*/request_id);
//   int32_t token = sampler.Sample(logits, history);  // history = prompt + generated so far
//   loom::sampler::TokenLogprobs lp = loom::sampler::Logprobs(logits, token, params.top_logprobs);
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace loom::sampler {

// Per-request sampling settings. Ranges follow OpenAI's API where it has the field.
struct SamplingParams {
  float temperature = 1.0f;         // [0, 2]; 0 = greedy argmax (ties -> lowest token id).
  int top_k = 0;                    // >= 0; 0 = off.
  float top_p = 1.0f;               // (0, 1]; 1 = off.
  float min_p = 0.0f;               // [0, 1]; 0 = off. Keeps p >= min_p * p_max.
  float repetition_penalty = 1.0f;  // > 0; 1 = off. CTRL style: positive logits /=, others *=.
  float presence_penalty = 0.0f;    // [-2, 2]; logit -= presence if the token occurred.
  float frequency_penalty = 0.0f;   // [-2, 2]; logit -= count * frequency.
  int penalty_last_n = 64;          // >= -1; penalties look at this many last tokens; -1 = all,
                                    // 0 = penalties off.
  std::optional<uint64_t> seed;     // Unset: the Sampler's default_seed is used.
  int top_logprobs = 0;             // [0, 20]; alternatives to report per token (not used here).

  // InvalidArgument naming the first out-of-range field (NaN is out of range).
  absl::Status Validate() const;
};

// One sequence's sampler. Holds the sequence's RNG (std::mt19937_64 seeded with `seed`, else
// `default_seed`), so the tokens drawn depend only on this sequence's logits and history, never on
// batching or on other requests. Not thread-safe; use one Sampler per sequence.
class Sampler {
 public:
  // `params` should have passed Validate(); out-of-range values are clamped to sane behaviour
  // (temperature <= 0 is greedy, top_p >= 1 and top_k <= 0 are off) rather than crashing.
  Sampler(const SamplingParams& params, uint64_t default_seed);

  // Picks the next token from `logits` (one float per vocabulary entry; not modified, so the same
  // span can then be passed to Logprobs()). `history` is the prompt plus the tokens generated so
  // far, used for the penalties; ids outside [0, logits.size()) are ignored. NaN logits count as
  // -inf. Returns -1 only when `logits` is empty.
  //
  // With temperature > 0 each call consumes exactly one draw from the RNG, whatever the logits,
  // so a sequence's random stream is fixed by its seed and step number. Greedy calls draw nothing.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> history);

  const SamplingParams& params() const { return params_; }

 private:
  struct Candidate {
    float logit;
    int32_t id;
    float weight;  // exp(logit - max), filled in by the stage that needs it.
  };

  // Returns `logits`, or logits_ holding a penalised copy when any penalty applies.
  std::span<const float> Penalize(std::span<const float> logits, std::span<const int32_t> history);
  // Fills cands_ from `view`, keeping the best `top_k` (sorted) when 0 < top_k < size.
  void BuildCandidates(std::span<const float> view, int top_k);
  void ApplyTopP(double p);
  void ApplyMinP(float p);
  int32_t Draw(float temperature);

  SamplingParams params_;
  std::mt19937_64 rng_;

  // Scratch reused across calls; sized to the vocabulary on the first call.
  std::vector<float> logits_;     // Penalised copy of the caller's logits.
  std::vector<Candidate> cands_;  // Survivors of the filters (NaN already mapped to -inf).
  float max_logit_ = 0.0f;        // Of cands_; the filters never drop the maximum.
  bool sorted_ = false;           // cands_ is ordered by (logit desc, id asc).
  std::vector<int32_t> counts_;   // Per-token occurrence count in the penalty window; kept zero.
  std::vector<int32_t> touched_;  // Ids with non-zero counts_ during Penalize.
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;  // Natural log; -inf for impossible tokens.
};

struct TokenLogprobs {
  TokenLogprob chosen;            // The sampled token.
  std::vector<TokenLogprob> top;  // The top_n most likely tokens, best first (ties: lowest id).
};

// Log-softmax of the raw `logits` (before penalties and temperature, as OpenAI reports them) for
// `chosen` (logprob -inf when `chosen` is out of range) and for the `top_n` most likely tokens
// (clamped to [0, logits.size()]). NaN logits count as -inf. O(V log top_n).
TokenLogprobs Logprobs(std::span<const float> logits, int32_t chosen, int top_n);

}  // namespace loom::sampler
