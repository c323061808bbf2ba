#include "engine/sampler/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

namespace loom::sampler {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  const double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - mx) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

std::vector<float> RandomLogits(size_t n, uint32_t seed, float scale = 3.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

int32_t Argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Draw `draws` tokens from a fresh Sampler and return per-token frequencies.
std::vector<double> Frequencies(const SamplingParams& params, const std::vector<float>& logits,
                                int draws) {
  Sampler s(params, 1234);
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) {
    const int32_t t = s.Sample(logits, {});
    EXPECT_GE(t, 0);
    EXPECT_LT(t, static_cast<int32_t>(logits.size()));
    freq[t] += 1.0;
  }
  for (double& f : freq) f /= draws;
  return freq;
}

// Logits whose softmax is exactly `probs` (up to rounding).
std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> v;
  for (double p : probs) v.push_back(static_cast<float>(std::log(p)));
  return v;
}

TEST(SamplerTest, GreedyPicksArgmax) {
  Sampler s(Greedy(), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 3.0f, -1.0f, 2.9f}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{-5.0f, -4.0f, -7.0f}, {}), 1);
}

TEST(SamplerTest, GreedyTieGoesToLowestId) {
  Sampler s(Greedy(), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 3.0f, -1.0f, 3.0f}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{2.0f, 2.0f, 2.0f}, {}), 0);
}

TEST(SamplerTest, NanLogitsAreIgnoredAndEmptyIsMinusOne) {
  Sampler s(Greedy(), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{kNaN, 1.0f, kNaN, 0.5f}, {}), 1);
  SamplingParams p;
  Sampler t(p, 0);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(t.Sample(std::vector<float>{kNaN, 1.0f, kNaN}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{}, {}), -1);
}

TEST(SamplerTest, TopK1EqualsGreedy) {
  SamplingParams p;
  p.top_k = 1;
  p.temperature = 1.5f;
  Sampler s(p, 7);
  for (uint32_t trial = 0; trial < 50; ++trial) {
    const std::vector<float> logits = RandomLogits(1000, trial, 0.5f);
    EXPECT_EQ(s.Sample(logits, {}), Argmax(logits)) << trial;
  }
}

TEST(SamplerTest, TinyTopPGivesArgmax) {
  SamplingParams p;
  p.top_p = 1e-6f;
  Sampler s(p, 7);
  for (uint32_t trial = 0; trial < 50; ++trial) {
    const std::vector<float> logits = RandomLogits(5000, trial, 0.2f);
    EXPECT_EQ(s.Sample(logits, {}), Argmax(logits)) << trial;
  }
}

TEST(SamplerTest, TemperatureDistributionMatchesSoftmax) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f};
  for (float temperature : {0.5f, 1.0f, 1.7f}) {
    SamplingParams p;
    p.temperature = temperature;
    constexpr int kDraws = 200000;
    const std::vector<double> freq = Frequencies(p, logits, kDraws);
    const std::vector<double> want = Softmax(logits, temperature);
    double chi2 = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      EXPECT_NEAR(freq[i], want[i], 0.005) << "token " << i << " T=" << temperature;
      const double expected = want[i] * kDraws;
      const double observed = freq[i] * kDraws;
      chi2 += (observed - expected) * (observed - expected) / expected;
    }
    // 5 degrees of freedom: P(chi2 > 20.52) = 0.001.
    EXPECT_LT(chi2, 20.52) << "T=" << temperature;
  }
}

TEST(SamplerTest, TopKRenormalisesOverTheKBest) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f};
  SamplingParams p;
  p.top_k = 2;
  const std::vector<double> freq = Frequencies(p, logits, 50000);
  const double p4 = 1.0 / (1.0 + std::exp(-0.5));
  EXPECT_NEAR(freq[4], p4, 0.01);
  EXPECT_NEAR(freq[5], 1.0 - p4, 0.01);
  EXPECT_EQ(freq[0] + freq[1] + freq[2] + freq[3], 0.0);
}

TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  const std::vector<float> logits = LogitsFor({0.15, 0.5, 0.05, 0.3});
  SamplingParams p;
  p.top_p = 0.7f;  // 0.5 < 0.7 <= 0.5 + 0.3: keeps tokens 1 and 3.
  const std::vector<double> freq = Frequencies(p, logits, 50000);
  EXPECT_NEAR(freq[1], 0.5 / 0.8, 0.01);
  EXPECT_NEAR(freq[3], 0.3 / 0.8, 0.01);
  EXPECT_EQ(freq[0] + freq[2], 0.0);
}

TEST(SamplerTest, MinPFiltersRelativeToTheBest) {
  const std::vector<float> logits = LogitsFor({0.5, 0.3, 0.15, 0.05});
  SamplingParams p;
  p.min_p = 0.2f;  // Threshold 0.1: token 3 goes.
  const std::vector<double> freq = Frequencies(p, logits, 50000);
  EXPECT_EQ(freq[3], 0.0);
  EXPECT_NEAR(freq[0], 0.5 / 0.95, 0.01);
  EXPECT_NEAR(freq[1], 0.3 / 0.95, 0.01);
  EXPECT_NEAR(freq[2], 0.15 / 0.95, 0.01);

  p.min_p = 1.0f;  // Only the best survives.
  EXPECT_EQ(Frequencies(p, logits, 1000)[0], 1.0);
}

TEST(SamplerTest, MinPAppliesAfterTopP) {
  // Token 0: 0.55, token 1: 0.2, tokens 2..26: 0.01 each.
  std::vector<double> probs = {0.55, 0.2};
  probs.resize(27, 0.01);
  SamplingParams p;
  p.top_p = 0.6f;  // Over all tokens: 0.55 < 0.6 <= 0.75 keeps {0, 1}.
  p.min_p = 0.1f;  // Then threshold 0.055 keeps both. (min_p first would leave {0, 1} renormalised
                   // to 0.733 / 0.267, and top_p 0.6 would then keep token 0 alone.)
  const std::vector<double> freq = Frequencies(p, LogitsFor(probs), 50000);
  EXPECT_NEAR(freq[0], 0.55 / 0.75, 0.01);
  EXPECT_NEAR(freq[1], 0.2 / 0.75, 0.01);
}

TEST(SamplerTest, LargeVocabFiltersKeepOnlyAllowedTokens) {
  constexpr size_t kVocab = 49152;
  const std::vector<float> logits = RandomLogits(kVocab, 99, 2.0f);
  std::vector<int32_t> order(kVocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });

  SamplingParams k;
  k.top_k = 40;
  const std::set<int32_t> top40(order.begin(), order.begin() + 40);
  Sampler sk(k, 5);
  for (int i = 0; i < 300; ++i) EXPECT_TRUE(top40.count(sk.Sample(logits, {})));

  // Wide nucleus, no top_k: exercises the growing partial sort.
  SamplingParams pp;
  pp.top_p = 0.9f;
  const std::vector<double> probs = Softmax(logits, 1.0);
  std::set<int32_t> nucleus;
  double cum = 0;
  for (int32_t id : order) {
    nucleus.insert(id);
    cum += probs[id];
    if (cum >= 0.9) break;
  }
  ASSERT_GT(nucleus.size(), 64u);
  Sampler sp(pp, 5);
  for (int i = 0; i < 300; ++i) EXPECT_TRUE(nucleus.count(sp.Sample(logits, {})));
}

TEST(SamplerTest, TopPWithTiesKeepsLowestIds) {
  // Flat distribution: the nucleus is the first half by id, decided inside one logit bucket.
  const std::vector<float> logits(1000, 0.25f);
  SamplingParams p;
  p.top_p = 0.5f;
  const std::vector<double> freq = Frequencies(p, logits, 10000);
  for (size_t i = 0; i < 500; ++i) EXPECT_GT(freq[i], 0.0) << i;
  for (size_t i = 500; i < 1000; ++i) EXPECT_EQ(freq[i], 0.0) << i;
}

TEST(SamplerTest, TopPSampledSetIsExactlyTheNucleus) {
  // Nearly flat logits so that every nucleus member, the boundary one included, gets drawn.
  // Token 7 holds ~29% of the mass, ~800 near-equal tokens share most of the rest, and a low tail
  // sits in other logit buckets; top_p 0.45 cuts through the near-equal block.
  std::vector<float> logits = RandomLogits(1000, 17, 0.01f);
  logits[7] = 5.8f;
  for (size_t i = 100; i < 300; ++i) logits[i] = -3.0f + 0.01f * static_cast<float>(i % 7);
  const std::vector<double> probs = Softmax(logits, 1.0);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  SamplingParams p;
  p.top_p = 0.45f;
  std::set<int32_t> nucleus;
  double cum = 0;
  for (int32_t id : order) {
    nucleus.insert(id);
    cum += probs[id];
    if (cum >= p.top_p) break;
  }
  ASSERT_GT(nucleus.size(), 100u);
  ASSERT_LT(nucleus.size(), 400u);
  const std::vector<double> freq = Frequencies(p, logits, 40000);
  std::set<int32_t> sampled;
  for (size_t i = 0; i < freq.size(); ++i) {
    if (freq[i] > 0) sampled.insert(static_cast<int32_t>(i));
  }
  EXPECT_EQ(sampled, nucleus);
}

TEST(SamplerTest, InfiniteLogitsFallBackToArgmax) {
  const float inf = std::numeric_limits<float>::infinity();
  Sampler s(SamplingParams{}, 1);
  EXPECT_EQ(s.Sample(std::vector<float>{0.0f, inf, inf}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{-inf, -inf, -inf}, {}), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{kNaN, kNaN}, {}), 0);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  SamplingParams p;
  p.seed = 123;
  auto run = [](const SamplingParams& params, uint64_t default_seed) {
    Sampler s(params, default_seed);
    std::vector<int32_t> out;
    for (uint32_t step = 0; step < 200; ++step) {
      out.push_back(s.Sample(RandomLogits(500, step, 0.5f), out));
    }
    return out;
  };
  const std::vector<int32_t> a = run(p, 1);
  EXPECT_EQ(a, run(p, 2));  // The explicit seed wins over default_seed.
  SamplingParams unseeded;
  EXPECT_EQ(a, run(unseeded, 123));  // default_seed is used when no seed is given.
  p.seed = 124;
  EXPECT_NE(a, run(p, 1));
}

TEST(SamplerTest, InterleavedSamplersDoNotAffectEachOther) {
  SamplingParams p;
  const std::vector<float> logits = RandomLogits(100, 3, 0.5f);
  Sampler alone(p, 42);
  std::vector<int32_t> want;
  for (int i = 0; i < 100; ++i) want.push_back(alone.Sample(logits, {}));
  Sampler a(p, 42), b(p, 43);
  std::vector<int32_t> got;
  for (int i = 0; i < 100; ++i) {
    b.Sample(logits, {});
    got.push_back(a.Sample(logits, {}));
    b.Sample(logits, {});
  }
  EXPECT_EQ(got, want);
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveLogits) {
  const std::vector<float> logits = {2.0f, 1.9f, -1.0f, 0.5f};
  const std::vector<int32_t> history = {0};
  SamplingParams p = Greedy();
  p.repetition_penalty = 1.2f;  // 2.0 / 1.2 = 1.667 < 1.9
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 1);
  p.repetition_penalty = 1.05f;  // 2.0 / 1.05 = 1.905 > 1.9
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 0);
}

TEST(SamplerTest, RepetitionPenaltyMultipliesNegativeLogits) {
  const std::vector<float> logits = {-1.0f, -1.1f};
  SamplingParams p = Greedy();
  p.repetition_penalty = 1.2f;  // -1.0 * 1.2 = -1.2 < -1.1 (dividing would give -0.83).
  EXPECT_EQ(Sampler(p, 0).Sample(logits, std::vector<int32_t>{0}), 1);
}

TEST(SamplerTest, FrequencyPenaltyScalesWithCount) {
  const std::vector<float> logits = {1.0f, 0.8f};
  const std::vector<int32_t> history = {0, 0, 0};
  SamplingParams p = Greedy();
  p.frequency_penalty = 0.1f;  // 1.0 - 3 * 0.1 = 0.7 < 0.8
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 1);
  p.frequency_penalty = 0.05f;  // 1.0 - 3 * 0.05 = 0.85 > 0.8
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 0);
  p.frequency_penalty = -0.1f;  // Negative values encourage repeats: 0.8 + 0.3 beats 1.0.
  EXPECT_EQ(Sampler(p, 0).Sample(std::vector<float>{1.0f, 0.8f}, std::vector<int32_t>{1, 1, 1}), 1);
}

TEST(SamplerTest, PresencePenaltyAppliesOnce) {
  const std::vector<float> logits = {1.0f, 0.8f};
  const std::vector<int32_t> history = {0, 0, 0};
  SamplingParams p = Greedy();
  p.presence_penalty = 0.1f;  // 1.0 - 0.1 = 0.9 > 0.8 (3 * 0.1 would lose).
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 0);
  p.presence_penalty = 0.3f;  // 0.7 < 0.8
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 1);
}

TEST(SamplerTest, CombinedPenaltiesComputedByHand) {
  // Token 0: 2.0 / 1.25 = 1.6, then - 2 * 0.2 (frequency) - 0.1 (presence) = 1.1.
  // Token 1: 1.5 / 1.25 = 1.2, then - 1 * 0.2 - 0.1 = 0.9. Token 2 untouched at 1.05.
  const std::vector<float> logits = {2.0f, 1.5f, 1.05f};
  const std::vector<int32_t> history = {0, 1, 0};
  SamplingParams p = Greedy();
  p.repetition_penalty = 1.25f;
  p.frequency_penalty = 0.2f;
  p.presence_penalty = 0.1f;
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 0);
  p.presence_penalty = 0.2f;  // Token 0 falls to 1.0 < 1.05.
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 2);
}

TEST(SamplerTest, PenaltyWindowIsLastN) {
  const std::vector<float> logits = {1.0f, 0.8f, 0.0f};
  const std::vector<int32_t> history = {0, 2, 2};
  SamplingParams p = Greedy();
  p.presence_penalty = 0.3f;
  p.penalty_last_n = 2;  // Window {2, 2}: token 0 keeps 1.0.
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 0);
  p.penalty_last_n = 3;  // Token 0 drops to 0.7.
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 1);
  p.penalty_last_n = -1;  // Whole history.
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 1);
  p.penalty_last_n = 0;  // Off.
  EXPECT_EQ(Sampler(p, 0).Sample(logits, history), 0);
}

TEST(SamplerTest, PenaltiesApplyWhenSamplingAndIgnoreOutOfRangeIds) {
  SamplingParams p;
  p.top_k = 1;
  p.repetition_penalty = 1.2f;
  Sampler s(p, 0);
  const std::vector<float> logits = {2.0f, 1.9f};
  EXPECT_EQ(s.Sample(logits, std::vector<int32_t>{0}), 1);
  EXPECT_EQ(s.Sample(logits, std::vector<int32_t>{-3, 2, 1000}), 0);
  // The counting scratch is reset between calls.
  EXPECT_EQ(s.Sample(logits, {}), 0);
}

TEST(LogprobsTest, SumsToOneAndMatchesLogSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, 0.5f, 2.0f};
  const TokenLogprobs lp = Logprobs(logits, 3, 5);
  const std::vector<double> probs = Softmax(logits, 1.0);
  EXPECT_EQ(lp.chosen.token, 3);
  EXPECT_NEAR(lp.chosen.logprob, std::log(probs[3]), 1e-5);
  ASSERT_EQ(lp.top.size(), 5u);
  double total = 0;
  for (const TokenLogprob& t : lp.top) {
    total += std::exp(t.logprob);
    EXPECT_NEAR(t.logprob, std::log(probs[t.token]), 1e-5);
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

TEST(LogprobsTest, TopIsSortedWithTiesByLowestId) {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, 0.5f, 2.0f};
  const TokenLogprobs lp = Logprobs(logits, 0, 4);
  std::vector<int32_t> ids;
  for (const TokenLogprob& t : lp.top) ids.push_back(t.token);
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 1, 4, 0}));
  EXPECT_TRUE(Logprobs(logits, 0, 0).top.empty());
  EXPECT_EQ(Logprobs(logits, 0, 100).top.size(), 5u);  // Clamped to the vocabulary.
  EXPECT_EQ(Logprobs(logits, 7, 1).chosen.logprob, -std::numeric_limits<float>::infinity());
}

TEST(LogprobsTest, LargeVocabTopMatchesFullSort) {
  const std::vector<float> logits = RandomLogits(49152, 11);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const TokenLogprobs lp = Logprobs(logits, order[0], 20);
  ASSERT_EQ(lp.top.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(lp.top[i].token, order[i]);
  for (size_t i = 1; i < 20; ++i) EXPECT_GE(lp.top[i - 1].logprob, lp.top[i].logprob);
  EXPECT_EQ(lp.chosen.logprob, lp.top[0].logprob);
  const TokenLogprobs all = Logprobs(logits, 0, static_cast<int>(logits.size()));
  double total = 0;
  for (const TokenLogprob& t : all.top) total += std::exp(static_cast<double>(t.logprob));
  EXPECT_NEAR(total, 1.0, 1e-4);
}

TEST(LogprobsTest, DegenerateLogits) {
  const float inf = std::numeric_limits<float>::infinity();
  const TokenLogprobs all_neg = Logprobs(std::vector<float>{-inf, -inf}, 0, 2);
  EXPECT_NEAR(all_neg.chosen.logprob, std::log(0.5), 1e-6);
  const TokenLogprobs nan = Logprobs(std::vector<float>{kNaN, 0.0f}, 1, 2);
  EXPECT_NEAR(nan.chosen.logprob, 0.0, 1e-6);
  EXPECT_EQ(nan.top[0].token, 1);
}

TEST(SamplingParamsTest, DefaultsAndBoundariesAreValid) {
  SamplingParams p;
  EXPECT_TRUE(p.Validate().ok());
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.penalty_last_n = -1;
  p.top_logprobs = 20;
  p.top_k = 100000;
  EXPECT_TRUE(p.Validate().ok()) << p.Validate();
  p.temperature = 2.0f;
  EXPECT_TRUE(p.Validate().ok()) << p.Validate();
}

TEST(SamplingParamsTest, ErrorsNameTheField) {
  struct Case {
    const char* field;
    void (*mutate)(SamplingParams&);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = 2.5f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = kNaN; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.1f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.1f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.5f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.1f; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -2.1f; }},
      {"penalty_last_n", [](SamplingParams& p) { p.penalty_last_n = -2; }},
      {"top_logprobs", [](SamplingParams& p) { p.top_logprobs = 21; }},
      {"top_logprobs", [](SamplingParams& p) { p.top_logprobs = -1; }},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    const absl::Status s = p.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace loom::sampler
