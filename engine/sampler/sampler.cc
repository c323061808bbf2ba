#include "engine/sampler/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "absl/strings/str_format.h"

namespace loom::sampler {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// NaN would break the strict weak ordering the sorts rely on.
inline float Sanitize(float x) { return std::isnan(x) ? kNegInf : x; }

// Maximum of `v` ignoring NaN; -inf when there is none. Eight independent lanes so that the
// compiler vectorises it (a single running max would be a serial dependency chain).
float MaxIgnoringNan(std::span<const float> v) {
  float lane[8];
  std::fill(std::begin(lane), std::end(lane), kNegInf);
  const size_t n = v.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t j = 0; j < 8; ++j) lane[j] = v[i + j] > lane[j] ? v[i + j] : lane[j];
  }
  float m = kNegInf;
  for (; i < n; ++i) m = v[i] > m ? v[i] : m;
  for (float x : lane) m = x > m ? x : m;
  return m;
}

// Strict total order used by every sort and heap: higher logit first, then lower id.
template <typename C>
inline bool Better(const C& a, const C& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

absl::Status OutOfRange(const char* field, const char* range, double value) {
  return absl::InvalidArgumentError(
      absl::StrFormat("sampling parameter %s must be in %s, got %g", field, range, value));
}

// Uniform double in [0, 1) from one 64-bit draw; unlike std::uniform_real_distribution this is the
// same on every standard library.
inline double Uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  // Written as !(in range) so that NaN is rejected too.
  if (!(temperature >= 0.0f && temperature <= 2.0f)) {
    return OutOfRange("temperature", "[0, 2]", temperature);
  }
  if (top_k < 0) return OutOfRange("top_k", "[0, inf) (0 = off)", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) return OutOfRange("top_p", "(0, 1]", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return OutOfRange("min_p", "[0, 1]", min_p);
  if (!(repetition_penalty > 0.0f && std::isfinite(repetition_penalty))) {
    return OutOfRange("repetition_penalty", "(0, inf)", repetition_penalty);
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "[-2, 2]", presence_penalty);
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "[-2, 2]", frequency_penalty);
  }
  if (penalty_last_n < -1) {
    return OutOfRange("penalty_last_n", "[-1, inf) (-1 = whole history)", penalty_last_n);
  }
  if (top_logprobs < 0 || top_logprobs > 20) {
    return OutOfRange("top_logprobs", "[0, 20]", top_logprobs);
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, uint64_t default_seed)
    : params_(params), rng_(params.seed.value_or(default_seed)) {}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history) {
  const size_t n = logits.size();
  if (n == 0) return -1;
  const std::span<const float> view = Penalize(logits, history);

  // Greedy: the first (lowest id) token holding the maximum; NaN never wins.
  const float best_logit = MaxIgnoringNan(view);
  size_t best = 0;
  while (best < n && !(view[best] == best_logit)) ++best;
  if (best == n) best = 0;  // All NaN.
  const bool greedy = !(params_.temperature > 0.0f);
  if (greedy) return static_cast<int32_t>(best);
  // Same answer when no finite maximum exists (all -inf/NaN, or +inf present): a softmax is
  // meaningless there. Still draw once to keep the one-draw-per-call contract.
  if (!std::isfinite(best_logit)) {
    rng_();
    return static_cast<int32_t>(best);
  }
  max_logit_ = best_logit;

  BuildCandidates(view, params_.top_k);
  ApplyTopP(params_.top_p);
  ApplyMinP(params_.min_p);
  return Draw(params_.temperature);
}

std::span<const float> Sampler::Penalize(std::span<const float> logits,
                                         std::span<const int32_t> history) {
  const float rep = params_.repetition_penalty;
  const float freq = params_.frequency_penalty;
  const float pres = params_.presence_penalty;
  if (params_.penalty_last_n == 0 || history.empty() ||
      (rep == 1.0f && freq == 0.0f && pres == 0.0f)) {
    return logits;
  }
  if (params_.penalty_last_n > 0 && history.size() > static_cast<size_t>(params_.penalty_last_n)) {
    history = history.last(static_cast<size_t>(params_.penalty_last_n));
  }
  logits_.assign(logits.begin(), logits.end());
  const size_t n = logits_.size();
  if (counts_.size() < n) counts_.resize(n, 0);
  for (int32_t t : history) {
    if (t < 0 || static_cast<size_t>(t) >= n) continue;
    if (counts_[t]++ == 0) touched_.push_back(t);
  }
  for (int32_t t : touched_) {
    float& logit = logits_[t];
    const int32_t count = counts_[t];
    // llama.cpp (llama_sampler_penalties_apply): the repetition penalty is applied once per token.
    if (rep > 0.0f && rep != 1.0f) logit = logit <= 0.0f ? logit * rep : logit / rep;
    logit -= static_cast<float>(count) * freq + pres;
    counts_[t] = 0;
  }
  touched_.clear();
  return logits_;
}

void Sampler::BuildCandidates(std::span<const float> view, int top_k) {
  const size_t n = view.size();
  const size_t k = top_k > 0 ? std::min(static_cast<size_t>(top_k), n) : n;
  cands_.clear();
  if (k <= 256 && k < n) {
    // Small top_k: one pass with a bounded heap (front = worst kept). Ids arrive in increasing
    // order, so a later token displaces the worst only with a strictly greater logit.
    for (size_t i = 0; i < n; ++i) {
      const float x = Sanitize(view[i]);
      if (cands_.size() < k) {
        cands_.push_back({x, static_cast<int32_t>(i), 0.0f});
        std::push_heap(cands_.begin(), cands_.end(), Better<Candidate>);
      } else if (x > cands_.front().logit) {
        std::pop_heap(cands_.begin(), cands_.end(), Better<Candidate>);
        cands_.back() = {x, static_cast<int32_t>(i), 0.0f};
        std::push_heap(cands_.begin(), cands_.end(), Better<Candidate>);
      }
    }
    std::sort(cands_.begin(), cands_.end(), Better<Candidate>);
    sorted_ = true;
    return;
  }
  cands_.resize(n);
  for (size_t i = 0; i < n; ++i) cands_[i] = {Sanitize(view[i]), static_cast<int32_t>(i), 0.0f};
  sorted_ = false;
  if (k < n) {  // Large top_k: O(V) selection, then sort only the k kept.
    std::nth_element(cands_.begin(), cands_.begin() + k, cands_.end(), Better<Candidate>);
    cands_.resize(k);
    std::sort(cands_.begin(), cands_.end(), Better<Candidate>);
    sorted_ = true;
  }
}

void Sampler::ApplyTopP(double p) {
  const size_t n = cands_.size();
  if (!(p < 1.0) || n <= 1) return;
  double sum = 0.0;
  for (Candidate& c : cands_) {
    c.weight = std::exp(c.logit - max_logit_);
    sum += c.weight;
  }
  // Keep the k best candidates, k the smallest count whose probability mass reaches p
  // (llama.cpp: cum_sum >= p, the crossing token included).
  const double need = p * sum;
  size_t lo = 0, hi = n;  // The answer k is in (lo, hi].
  double acc = 0.0;       // Mass of cands_[0, lo), which are better than all of cands_[lo, n).
  if (!sorted_) {
    // No full sort of the vocabulary. First bucket the candidates by distance below the maximum
    // (the last bucket takes everything lower; e^-32 is negligible for any p < 1) and find the
    // bucket where the mass crosses p; only that bucket needs ordering.
    constexpr int kBuckets = 128;
    constexpr float kPerUnit = kBuckets / 32.0f;
    const float max_logit = max_logit_;
    auto bucket_of = [max_logit](float logit) {
      const float d = (max_logit - logit) * kPerUnit;  // +inf for -inf logits.
      return d < kBuckets - 1 ? static_cast<int>(d) : kBuckets - 1;
    };
    std::array<double, kBuckets> mass{};
    for (const Candidate& c : cands_) mass[bucket_of(c.logit)] += c.weight;
    int crossing = 0;
    while (crossing < kBuckets - 1 && acc + mass[crossing] < need) acc += mass[crossing++];
    auto begin = cands_.begin();
    auto mid = std::partition(begin, cands_.end(),
                              [&](const Candidate& c) { return bucket_of(c.logit) < crossing; });
    auto end = std::partition(mid, cands_.end(),
                              [&](const Candidate& c) { return bucket_of(c.logit) == crossing; });
    lo = static_cast<size_t>(mid - begin);
    hi = static_cast<size_t>(end - begin);
    // Within the crossing bucket: weighted quickselect, O(bucket size), in case it is large
    // (e.g. a flat distribution).
    while (hi - lo > 64) {
      const size_t half = lo + (hi - lo) / 2;
      std::nth_element(begin + lo, begin + half, begin + hi, Better<Candidate>);
      double left = 0.0;
      for (size_t i = lo; i < half; ++i) left += cands_[i].weight;
      if (acc + left >= need) {
        hi = half;
      } else {
        acc += left;
        lo = half;
      }
    }
    std::sort(begin + lo, begin + hi, Better<Candidate>);
  }
  size_t keep = hi;  // Rounding left the mass just under p: keep the whole range.
  for (size_t i = lo; i < hi; ++i) {
    acc += cands_[i].weight;
    if (acc >= need) {
      keep = i + 1;
      break;
    }
  }
  cands_.resize(keep);
  // cands_ stays sorted only if it was; after the select only the tail [lo, keep) is ordered.
}

void Sampler::ApplyMinP(float p) {
  if (!(p > 0.0f) || cands_.size() <= 1) return;
  // p_i >= p * p_max  <=>  logit_i >= max_logit + log(p). The max always survives.
  const float threshold = max_logit_ + std::log(p);
  if (sorted_) {
    size_t keep = 1;
    while (keep < cands_.size() && cands_[keep].logit >= threshold) ++keep;
    cands_.resize(keep);
  } else {
    std::erase_if(cands_, [threshold](const Candidate& c) { return c.logit < threshold; });
  }
}

int32_t Sampler::Draw(float temperature) {
  const double u = Uniform01(rng_);
  const float inv_t = 1.0f / temperature;
  double sum = 0.0;
  for (Candidate& c : cands_) {
    c.weight = std::exp((c.logit - max_logit_) * inv_t);
    sum += c.weight;
  }
  const double target = u * sum;
  double cum = 0.0;
  size_t last_positive = 0;
  for (size_t i = 0; i < cands_.size(); ++i) {
    if (!(cands_[i].weight > 0.0f)) continue;
    cum += cands_[i].weight;
    last_positive = i;
    if (target < cum) return cands_[i].id;
  }
  return cands_[last_positive].id;  // Rounding at the very top of the range.
}

TokenLogprobs Logprobs(std::span<const float> logits, int32_t chosen, int top_n) {
  TokenLogprobs out;
  out.chosen.token = chosen;
  const size_t n = logits.size();
  if (n == 0) {
    out.chosen.logprob = kNegInf;
    return out;
  }

  const float max_logit = MaxIgnoringNan(logits);
  // log of the softmax denominator; in the degenerate cases (all -inf/NaN, or +inf present) the
  // mass is shared evenly by the tokens equal to the maximum.
  double log_z;
  float tie_logprob = 0.0f;
  const bool degenerate = !std::isfinite(max_logit);
  if (!degenerate) {
    double sum = 0.0;
    for (float x : logits) {
      if (x >= kNegInf) sum += std::exp(x - max_logit);  // false for NaN
    }
    log_z = max_logit + std::log(sum);
  } else {
    size_t ties = 0;
    for (float x : logits) ties += Sanitize(x) == max_logit;
    tie_logprob = static_cast<float>(-std::log(static_cast<double>(ties)));
    log_z = max_logit;
  }
  auto logprob = [&](size_t i) -> float {
    const float x = Sanitize(logits[i]);
    if (degenerate) return x == max_logit ? tie_logprob : kNegInf;
    return static_cast<float>(static_cast<double>(x) - log_z);
  };

  out.chosen.logprob = (chosen >= 0 && static_cast<size_t>(chosen) < n)
                           ? logprob(static_cast<size_t>(chosen))
                           : kNegInf;

  const size_t k = static_cast<size_t>(std::clamp<int64_t>(top_n, 0, static_cast<int64_t>(n)));
  if (k == 0) return out;
  // Bounded min-heap of the best k seen so far: front is the worst kept. Ids arrive in increasing
  // order, so a later token displaces the worst only with a strictly greater logit.
  struct Entry {
    float logit;
    int32_t id;
  };
  std::vector<Entry> heap;
  heap.reserve(k);
  for (size_t i = 0; i < n; ++i) {
    const Entry e{Sanitize(logits[i]), static_cast<int32_t>(i)};
    if (heap.size() < k) {
      heap.push_back(e);
      std::push_heap(heap.begin(), heap.end(), Better<Entry>);
    } else if (e.logit > heap.front().logit) {
      std::pop_heap(heap.begin(), heap.end(), Better<Entry>);
      heap.back() = e;
      std::push_heap(heap.begin(), heap.end(), Better<Entry>);
    }
  }
  std::sort(heap.begin(), heap.end(), Better<Entry>);
  out.top.reserve(k);
  for (const Entry& e : heap) out.top.push_back({e.id, logprob(static_cast<size_t>(e.id))});
  return out;
}

}  // namespace loom::sampler
