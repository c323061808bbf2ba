// Loom against llama.cpp on the real model: identical prompt tokens, identical greedy continuation,
// and first-step top-10 logits within a stated tolerance. The reference numbers come from
// tools/make_reference.py (llama-cpp-python) and are committed in
// tests/data/reference_llamacpp.json.
//
// llama.cpp quantizes activations (Q8_1 / Q8_0) for its quantized dot products, and so does Loom
// with the same x86 formula, but the floating-point summation order differs (llama.cpp here was
// built for AVX-512, Loom uses AVX2). Rounding a value to 8 bits turns a 1-ulp difference into a
// whole quantization step, so such differences grow through 30 layers: Loom's own AVX2 and scalar
// paths differ from each other by up to ~0.5 on these logits, as much as either differs from
// llama.cpp. Hence the stated tolerance; where llama.cpp's own top-2 logits at a step are closer
// than it, either token is a faithful greedy choice and the comparison of that case ends there
// (the test prints how often).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/backend.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace loom::engine {
namespace {

constexpr char kModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr char kReference[] = "tests/data/reference_llamacpp.json";
// Largest allowed |Loom - llama.cpp| on a first-step top-10 logit (top logits here are 17-35).
constexpr float kLogitTolerance = 0.6f;
// Below this llama.cpp top-1/top-2 gap a step is a near-tie (see above).
constexpr float kTieMargin = kLogitTolerance;

class ReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream f(kModel);
    if (!f.good()) return;
    auto model = Model::Load(kModel);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    auto tok = tokenizer::Tokenizer::FromGguf(model_->file());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
    std::ifstream r(kReference);
    ASSERT_TRUE(r.good()) << kReference;
    reference_ = new nlohmann::json(nlohmann::json::parse(r));
  }
  static void TearDownTestSuite() {
    delete reference_;
    delete tokenizer_;
    delete model_;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << kModel << " is missing: run tools/fetch_model.sh";
  }
  static Model* model_;
  static tokenizer::Tokenizer* tokenizer_;
  static nlohmann::json* reference_;
};
Model* ReferenceTest::model_ = nullptr;
tokenizer::Tokenizer* ReferenceTest::tokenizer_ = nullptr;
nlohmann::json* ReferenceTest::reference_ = nullptr;

TEST_F(ReferenceTest, TokenizesLikeLlamaCpp) {
  for (const auto& c : (*reference_)["cases"]) {
    const std::string text = c["text"];
    std::vector<int32_t> want = c["prompt_ids"];
    std::vector<int32_t> got = tokenizer_->Encode(text, /*add_special=*/false,
                                                  /*parse_special=*/true);
    EXPECT_EQ(got, want) << c["name"];
  }
}

TEST_F(ReferenceTest, GreedyAndLogitsMatchLlamaCpp) {
  for (int threads : {1, 2}) {
    auto backend = CreateBackend("cpu", *model_, {.n_threads = threads});
    ASSERT_TRUE(backend.ok()) << backend.status();
    int identical_steps = 0, total_steps = 0, near_tie_steps = 0, free_running_steps = 0;
    int cut_cases = 0;
    float worst_logit = 0;
    for (const auto& c : (*reference_)["cases"]) {
      const std::string name = c["name"];
      std::vector<int32_t> prompt = c["prompt_ids"];
      std::vector<int32_t> greedy = c["greedy"];
      std::vector<float> margins = c["margins"];
      KvSequence kv(model_->config(), 4096);
      std::vector<float> logits;
      // Prefill in 512-token chunks, as a server would.
      for (size_t p = 0; p < prompt.size(); p += 512) {
        SeqBatch b{
            &kv,
            std::span<const int32_t>(prompt).subspan(p, std::min<size_t>(512, prompt.size() - p)),
            false};
        ASSERT_TRUE((*backend)->Forward({&b, 1}, &logits).ok());
      }
      // First-step top-10 logits.
      std::vector<int32_t> top_ids = c["top_ids"];
      std::vector<float> top_logits = c["top_logits"];
      for (size_t i = 0; i < top_ids.size(); ++i) {
        const float diff = std::fabs(logits[top_ids[i]] - top_logits[i]);
        worst_logit = std::max(worst_logit, diff);
        EXPECT_LE(diff, kLogitTolerance) << name << " top-" << i << " token " << top_ids[i];
      }
      // Greedy continuation, fed llama.cpp's tokens (so one near-tie does not end the case): at
      // every step Loom's argmax must be llama.cpp's token unless llama.cpp's own margin there is
      // under kTieMargin. Free-running, the two would stay identical up to the first such step.
      bool free_running = true;
      for (size_t step = 0; step < greedy.size(); ++step) {
        ++total_steps;
        const int32_t best =
            static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (best == greedy[step]) {
          ++identical_steps;
          if (free_running) ++free_running_steps;
        } else if (margins[step] < kTieMargin) {
          ++near_tie_steps;
          if (free_running) {
            ++cut_cases;
            std::printf(
                "%s: free-running output would diverge at near-tie step %zu (llama.cpp "
                "margin %.4f)\n",
                name.c_str(), step, margins[step]);
          }
          free_running = false;
        } else {
          ADD_FAILURE() << name << ": step " << step << " Loom " << best << " llama.cpp "
                        << greedy[step] << " (margin " << margins[step] << ")";
          free_running = false;
        }
        if (step + 1 == greedy.size()) break;
        SeqBatch b{&kv, std::span<const int32_t>(&greedy[step], 1), false};
        ASSERT_TRUE((*backend)->Forward({&b, 1}, &logits).ok());
      }
    }
    std::printf(
        "threads=%d: %d/%d greedy steps identical to llama.cpp, %d differ at near-ties "
        "(margin < %.2f); free-running, %d steps identical before %d/%zu cases meet a "
        "near-tie; worst first-step top-10 logit difference %.4f\n",
        threads, identical_steps, total_steps, near_tie_steps, kTieMargin, free_running_steps,
        cut_cases, (*reference_)["cases"].size(), worst_logit);
  }
}

}  // namespace
}  // namespace loom::engine
