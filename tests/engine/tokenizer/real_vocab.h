// Test support: a fixture holding the real SmolLM2 tokenizer, loaded once per test binary (it is
// never freed: tests may keep pointers into it). Tests skip when models/ lacks the model.
//
//   class MyTest : public loom::tokenizer::RealVocabTest {};
//   TEST_F(MyTest, Encodes) { EXPECT_FALSE(tok_->Encode("hi", false, false).empty()); }
#pragma once

#include <filesystem>

#include "engine/gguf/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace loom::tokenizer {

inline constexpr const char* kModelPath = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

class RealVocabTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (tok_ != nullptr || !std::filesystem::exists(kModelPath)) return;
    auto file = gguf::GgufFile::Open(kModelPath);
    ASSERT_TRUE(file.ok()) << file.status();
    auto t = Tokenizer::FromGguf(**file);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = t->release();
  }
  void SetUp() override {
    if (tok_ == nullptr) GTEST_SKIP() << kModelPath << " not present";
  }
  static inline Tokenizer* tok_ = nullptr;
};

}  // namespace loom::tokenizer
