// Opens the real SmolLM2-135M-Instruct Q4_1 GGUF (models/, label `model`) and checks its layout.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "gtest/gtest.h"

namespace loom::gguf {
namespace {

using kernels::DType;

constexpr char kModelPath[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

class SmolLM2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModelPath)) {
      GTEST_SKIP() << kModelPath << " is missing (run from the repo root with the model present)";
    }
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(kModelPath);
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = std::move(*f);
  }
  std::unique_ptr<GgufFile> file_;
};

TEST_F(SmolLM2Test, HeaderAndHyperparameters) {
  EXPECT_EQ(file_->version(), 3u);
  EXPECT_EQ(file_->tensors().size(), 272u);
  EXPECT_EQ(*file_->GetString("general.architecture"), "llama");
  EXPECT_EQ(*file_->GetUint32("llama.block_count"), 30u);
  EXPECT_EQ(*file_->GetUint32("llama.embedding_length"), 576u);
  EXPECT_EQ(*file_->GetInt64("llama.embedding_length"), 576);
}

TEST_F(SmolLM2Test, Tensors) {
  const TensorInfo* embd = file_->FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, DType::kQ8_0);
  EXPECT_EQ(embd->n_dims, 2);
  EXPECT_EQ(embd->ne[0], 576);
  EXPECT_EQ(embd->ne[1], 49152);
  EXPECT_EQ(embd->size_bytes, size_t{576} / 32 * 34 * 49152);

  const TensorInfo* q = file_->FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, DType::kQ4_1);
  EXPECT_EQ(q->ne[0], 576);
  EXPECT_EQ(q->ne[1], 576);

  // Every tensor lies inside the file, aligned.
  const uint8_t* data_start = embd->data - embd->offset;
  size_t total = 0;
  for (const TensorInfo& t : file_->tensors()) {
    EXPECT_EQ(t.offset % file_->alignment(), 0u) << t.name;
    EXPECT_EQ(t.data, data_start + t.offset) << t.name;
    EXPECT_LE(file_->data_offset() + t.offset + t.size_bytes, file_->file_size()) << t.name;
    total += t.size_bytes;
  }
  EXPECT_LE(file_->data_offset() + total, file_->file_size());
}

TEST_F(SmolLM2Test, Tokenizer) {
  absl::StatusOr<std::vector<std::string>> tokens = file_->GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 49152u);
  absl::StatusOr<std::vector<std::string>> merges = file_->GetStringArray("tokenizer.ggml.merges");
  ASSERT_TRUE(merges.ok()) << merges.status();
  EXPECT_EQ(merges->size(), 48900u);
  absl::StatusOr<std::string> tmpl = file_->GetString("tokenizer.chat_template");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_FALSE(tmpl->empty());
}

}  // namespace
}  // namespace loom::gguf
