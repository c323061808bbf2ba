// Token ids identical to llama.cpp on SmolLM2 for the cases in tests/data/tokenizer_cases.json
// (written by tools/tokenizer_cases.py with llama.cpp's Python binding), plus encode speed.
// Skipped when the model file is absent. LOOM_TOKENIZER_CASES=<file> compares another case file
// (e.g. tools/tokenizer_cases.py --fuzz 3000 --out /tmp/fuzz.json).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/tokenizer/real_vocab.h"

namespace loom::tokenizer {
namespace {

constexpr const char* kCasesPath = "tests/data/tokenizer_cases.json";

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::string ToHex(std::string_view s) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (const char c : s) {
    out.push_back(kDigits[static_cast<uint8_t>(c) >> 4]);
    out.push_back(kDigits[static_cast<uint8_t>(c) & 15]);
  }
  return out;
}

class LlamaCppParity : public RealVocabTest {
 protected:
  // Compares every case of a case file; returns the number of cases.
  static int CompareFile(const std::string& path) {
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << "cannot read " << path;
    if (!in.good()) return 0;
    const nlohmann::json doc = nlohmann::json::parse(in);
    EXPECT_EQ(doc["vocab_size"].get<int>(), tok_->vocab_size());
    EXPECT_EQ(doc["bos_id"].get<int>(), tok_->bos_id());
    EXPECT_EQ(doc["eos_id"].get<int>(), tok_->eos_id());
    EXPECT_EQ(doc["add_bos"].get<bool>(), tok_->add_bos());
    EXPECT_EQ(doc["eog_ids"].get<std::vector<int32_t>>(), tok_->eog_ids());
    int n = 0, same = 0;
    for (const auto& c : doc["cases"]) {
      const std::string name = c["name"].get<std::string>();
      const std::string text = FromHex(c["text_hex"].get<std::string>());
      const bool special = c["parse_special"].get<bool>();
      const auto want = c["ids"].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok_->Encode(text, /*add_special=*/false, special);
      ++n;
      same += got == want;
      EXPECT_EQ(got, want) << name << " (hex " << ToHex(text) << ", parse_special " << special
                           << ")";
      EXPECT_EQ(ToHex(tok_->Decode(want, /*render_special=*/true)),
                c["decoded_hex"].get<std::string>())
          << name;
    }
    std::printf("[ llama.cpp ] %d/%d cases identical (%s)\n", same, n, path.c_str());
    return n;
  }
};

TEST_F(LlamaCppParity, CommittedCases) { EXPECT_GE(CompareFile(kCasesPath), 40); }

TEST_F(LlamaCppParity, ExtraCasesFromEnvironment) {
  const char* path = std::getenv("LOOM_TOKENIZER_CASES");
  if (path == nullptr) GTEST_SKIP() << "set LOOM_TOKENIZER_CASES to compare another case file";
  EXPECT_GT(CompareFile(path), 0);
}

// Pseudo-English with few repeated words (so the per-word cache helps little), some code,
// numbers and punctuation: about 1,500 tokens.
std::string LongPrompt() {
  std::mt19937 rng(7);
  const std::vector<std::string> syllables = {"ka",  "lo", "mer", "tin", "ra", "pol", "ves", "and",
                                              "the", "qu", "ist", "on",  "ex", "ple", "su",  "dro"};
  const std::vector<std::string> joints = {" ",  " ",    " ",      " ",  ", ", ". ",   "\n", " (",
                                           ") ", " 42 ", " 3.14 ", "; ", ": ", " -- ", "'s "};
  std::uniform_int_distribution<size_t> syl(0, syllables.size() - 1), joint(0, joints.size() - 1);
  std::uniform_int_distribution<int> nsyl(1, 4);
  std::string s;
  while (s.size() < 3550) {
    for (int k = nsyl(rng); k > 0; --k) s += syllables[syl(rng)];
    s += joints[joint(rng)];
  }
  return s;
}

TEST_F(LlamaCppParity, EncodeSpeed) {
  const std::string prompt = LongPrompt();
  // A fresh tokenizer, so the first encode runs with an empty word cache.
  auto file = gguf::GgufFile::Open(kModelPath);
  ASSERT_TRUE(file.ok());
  auto t = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(t.ok());
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const size_t n_tokens = (*t)->Encode(prompt, false, true).size();
  const double cold_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::vector<double> warm;
  for (int i = 0; i < 20; ++i) {
    const auto a = Clock::now();
    (*t)->Encode(prompt, false, true);
    warm.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
  }
  std::sort(warm.begin(), warm.end());
  std::printf("[ speed ] %zu tokens: cold %.2f ms, warm median %.2f ms\n", n_tokens, cold_ms,
              warm[warm.size() / 2]);
  EXPECT_GT(n_tokens, 1200u);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LT(cold_ms, 10.0);
  EXPECT_LT(warm[warm.size() / 2], 10.0);
#endif
}

}  // namespace
}  // namespace loom::tokenizer
