// DuoAttention in the serving engine on the real SmolLM2 (its proxy pattern in
// config/duo_attention/): at sparsity 0.5 a greedy generation whose prompt and output stay within
// sink + recent equals full attention token for token; sparsity 0 equals plain attention and
// keeps prefix caching; chunked prefill gives the same tokens as one chunk past the window; the
// KV bytes the engine reports split into retrieval (paged) and streaming (fixed per sequence).
#include <fstream>
#include <thread>

#include "engine/model/duo_pattern.h"
#include "engine/serving/engine.h"
#include "gtest/gtest.h"

namespace loom::engine {
namespace {

constexpr char kModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr char kPattern[] = "config/duo_attention/SmolLM2-135M-Instruct.Q4_1.json";

std::vector<int32_t> Drain(RequestStream& s, Usage* usage = nullptr) {
  std::vector<int32_t> out;
  StreamEvent ev;
  while (s.Next(&ev)) {
    if (ev.token >= 0) out.push_back(ev.token);
    if (ev.finished && usage != nullptr) *usage = ev.usage;
  }
  return out;
}

void WaitIdle(const Engine& e) {
  for (int i = 0; i < 500 && (e.Stats().num_running > 0 || e.Stats().num_waiting > 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class DuoModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::ifstream(kModel).good()) GTEST_SKIP() << kModel << " is missing";
    auto p = DuoPattern::LoadJson(kPattern);
    ASSERT_TRUE(p.ok()) << p.status();
    pattern_ = *p;
  }
  std::unique_ptr<Engine> Make(double sparsity, int max_batched_tokens = 256, bool duo = true,
                               int64_t kv_bytes = 64ll << 20, int max_num_seqs = 4,
                               int prefix_snapshots = 0) {
    auto model = Model::Load(kModel);
    EXPECT_TRUE(model.ok()) << model.status();
    EngineConfig cfg;
    cfg.n_threads = 2;
    cfg.max_context = 2048;
    cfg.max_num_seqs = max_num_seqs;
    cfg.max_batched_tokens = max_batched_tokens;
    cfg.kv_cache_bytes = kv_bytes;
    cfg.duo_prefix_snapshots = prefix_snapshots;
    if (duo) {
      auto layout = pattern_.Layout((*model)->config(), sparsity);
      EXPECT_TRUE(layout.ok()) << layout.status();
      cfg.duo = *layout;
    }
    auto e = Engine::Create(cfg, std::move(*model));
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  std::vector<int32_t> Greedy(Engine& e, const std::string& text, int max_tokens,
                              Usage* usage = nullptr) {
    Request r;
    r.prompt = e.tokenizer().Encode(text, true, false);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.stop_at_eog = false;
    auto s = e.Submit(r);
    EXPECT_TRUE(s.ok()) << s.status();
    return Drain(**s, usage);
  }
  DuoPattern pattern_;
};

const char* kPrompts[] = {
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
};

TEST_F(DuoModelTest, HalfStreamingEqualsFullWithinTheWindow) {
  auto full = Make(0, 256, /*duo=*/false);
  auto duo = Make(0.5);
  ASSERT_EQ(duo->config().duo->TotalStreaming(), 45);
  for (const char* p : kPrompts) {
    const auto want = Greedy(*full, p, 48);
    EXPECT_EQ(Greedy(*duo, p, 48), want) << p;
    ASSERT_LE(duo->tokenizer().Encode(p, true, false).size() + 48,
              static_cast<size_t>(pattern_.sink + pattern_.recent));
  }
}

TEST_F(DuoModelTest, SparsityZeroIsPlainAttentionWithPrefixCaching) {
  auto full = Make(0, 256, /*duo=*/false);
  auto duo = Make(0.0);
  const std::string long_prompt =
      std::string(kPrompts[2]) +
      " there lived an old clockmaker who repaired every clock in the valley. " +
      "Each morning he opened his shop, wound the great clock on the wall, and waited.";
  EXPECT_EQ(Greedy(*duo, long_prompt, 24), Greedy(*full, long_prompt, 24));
  Usage usage;
  Greedy(*duo, long_prompt, 4, &usage);
  EXPECT_GT(usage.cached_prompt_tokens, 0);
  EXPECT_EQ(duo->Stats().kv_streaming_capacity_bytes, 0);
}

TEST_F(DuoModelTest, ChunkedPrefillPastTheWindowGivesTheSameTokens) {
  std::string doc;
  for (int i = 0; i < 40; ++i) {
    doc += "Line " + std::to_string(i) + ": the river carries the boats past the old mill. ";
  }
  doc += "\nSummary of the text above:";
  auto one = Make(0.5, /*max_batched_tokens=*/2048);
  auto chunked = Make(0.5, /*max_batched_tokens=*/96);
  ASSERT_GT(one->tokenizer().Encode(doc, true, false).size(),
            static_cast<size_t>(pattern_.sink + pattern_.recent));
  Usage usage;
  const auto a = Greedy(*one, doc, 24, &usage);
  EXPECT_EQ(usage.cached_prompt_tokens, 0);
  EXPECT_EQ(Greedy(*chunked, doc, 24), a);
  // Without prefix snapshots, prefix caching is off with streaming heads: recomputed.
  EXPECT_EQ(Greedy(*one, doc, 24, &usage), a);
  EXPECT_EQ(usage.cached_prompt_tokens, 0);
  EXPECT_FALSE(one->Stats().duo.prefix_caching);
}

TEST_F(DuoModelTest, PrefixCacheHitsRestoreTheStreamingHeads) {
  std::string doc;
  for (int i = 0; i < 60; ++i) {
    doc += "Line " + std::to_string(i) + ": the river carries the boats past the old mill. ";
  }
  const std::string q1 = doc + "\nQuestion: what does the river carry?\nAnswer:";
  const std::string q2 = doc + "\nQuestion: what is old?\nAnswer:";
  // Plain recompute (no snapshots) is the reference; chunks of 96 end on block boundaries, so
  // the cached engine keeps a snapshot every 96 tokens and one at each prompt's last full block.
  auto reference = Make(0.5, 96, true, 64ll << 20, 4, /*prefix_snapshots=*/0);
  auto cached = Make(0.5, 96, true, 64ll << 20, 4, /*prefix_snapshots=*/8);
  const size_t doc_tokens = cached->tokenizer().Encode(doc, true, false).size();
  ASSERT_GT(doc_tokens, static_cast<size_t>(2 * (pattern_.sink + pattern_.recent)));
  EngineStats st = cached->Stats();
  EXPECT_TRUE(st.duo.prefix_caching);
  EXPECT_EQ(st.duo.prefix_snapshot_capacity, 8);
  EXPECT_EQ(st.duo.prefix_snapshots, 0);

  Usage usage;
  const auto want1 = Greedy(*reference, q1, 24);
  const auto want2 = Greedy(*reference, q2, 24);
  EXPECT_EQ(Greedy(*cached, q1, 24, &usage), want1);
  EXPECT_EQ(usage.cached_prompt_tokens, 0);
  WaitIdle(*cached);
  st = cached->Stats();
  EXPECT_GT(st.duo.prefix_snapshots, 0);
  EXPECT_EQ(st.duo.prefix_snapshot_bytes,
            st.duo.prefix_snapshots * cached->config().duo->StreamingBytesPerSequence());
  // The same question again resumes at the prompt's last full block.
  EXPECT_EQ(Greedy(*cached, q1, 24, &usage), want1);
  const int q1_tokens = usage.prompt_tokens;
  EXPECT_EQ(usage.cached_prompt_tokens, (q1_tokens - 1) / 16 * 16);
  // Another question on the same document resumes at the last snapshot inside the document.
  EXPECT_EQ(Greedy(*cached, q2, 24, &usage), want2);
  EXPECT_GE(usage.cached_prompt_tokens, static_cast<int>(doc_tokens) - 96);
  EXPECT_LE(usage.cached_prompt_tokens, static_cast<int>(doc_tokens));
  EXPECT_EQ(usage.cached_prompt_tokens % 96, 0);
  EXPECT_GT(cached->Stats().prefix_cache_hits, 0);
  // At most `capacity` snapshots are held.
  WaitIdle(*cached);
  EXPECT_LE(cached->Stats().duo.prefix_snapshots, 8);
}

TEST_F(DuoModelTest, ReportsRetrievalAndStreamingBytes) {
  auto full = Make(0, 256, /*duo=*/false);
  auto duo = Make(0.5);
  const DuoLayout& d = *duo->config().duo;
  // 30 layers x 3 KV heads x 64 x fp16 x (K, V) = 23040 bytes per token without streaming heads.
  EXPECT_EQ(d.RetrievalBytesPerToken(), 23040 / 2);
  EXPECT_EQ(d.StreamingBytesPerSequence(), 23040 / 2 * (pattern_.sink + pattern_.recent));
  WaitIdle(*duo);
  EngineStats s = duo->Stats();
  EXPECT_EQ(s.kv_streaming_capacity_bytes, 4 * d.StreamingBytesPerSequence());
  EXPECT_LE(s.kv_retrieval_capacity_bytes + s.kv_streaming_capacity_bytes, 64ll << 20);
  EXPECT_EQ(s.kv_streaming_bytes, 0);
  EXPECT_EQ(s.kv_retrieval_bytes, 0);
  // The blocks get what the 4 streaming caches leave, at half the bytes per token.
  const int64_t block = 16 * d.RetrievalBytesPerToken();
  EXPECT_EQ(s.kv_retrieval_capacity_bytes,
            ((64ll << 20) - 4 * d.StreamingBytesPerSequence()) / block * block);
  EXPECT_EQ(full->Stats().kv_retrieval_capacity_bytes, (64ll << 20) / (16 * 23040) * 16 * 23040);
  // The pattern in use (for /v1/engine/stats).
  EXPECT_TRUE(s.duo.enabled);
  EXPECT_DOUBLE_EQ(s.duo.sparsity, 0.5);
  EXPECT_EQ(s.duo.sink, pattern_.sink);
  EXPECT_EQ(s.duo.recent, pattern_.recent);
  EXPECT_EQ(s.duo.streaming_kv_heads, 45);
  EXPECT_EQ(s.duo.total_kv_heads, 90);
  EXPECT_FALSE(s.duo.prefix_caching);  // no prefix snapshots (Make's default here)
  const EngineStats::Duo off = full->Stats().duo;
  EXPECT_FALSE(off.enabled);
  EXPECT_EQ(off.streaming_kv_heads, 0);
  EXPECT_EQ(off.total_kv_heads, 90);
  EXPECT_TRUE(off.prefix_caching);
  // While a request runs, its bytes show.
  Request r;
  r.prompt = duo->tokenizer().Encode(kPrompts[1], true, false);
  r.max_tokens = 200;
  r.stop_at_eog = false;
  auto stream = duo->Submit(r);
  ASSERT_TRUE(stream.ok());
  StreamEvent ev;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*stream)->Next(&ev));
  s = duo->Stats();
  EXPECT_EQ(s.kv_streaming_bytes, d.StreamingBytesPerSequence());
  EXPECT_GT(s.kv_retrieval_bytes, 0);
  (*stream)->Cancel();
  Drain(**stream);
  WaitIdle(*duo);
  EXPECT_EQ(duo->Stats().kv_streaming_bytes, 0);
}

TEST_F(DuoModelTest, TheSameBudgetHoldsALongerSequence) {
  // 16 MiB, one sequence: full attention has 45 blocks (720 positions); at sparsity 0.5 the
  // streaming cache takes 3.5 MiB and the rest holds 71 blocks (1136 positions) of half the bytes.
  auto full = Make(0, 256, /*duo=*/false, 16ll << 20, 1);
  auto duo = Make(0.5, 256, /*duo=*/true, 16ll << 20, 1);
  std::string text;
  for (int i = 0; i < 90; ++i) text += "The grass is green. The sky is blue. ";
  Request r;
  r.prompt = full->tokenizer().Encode(text, true, false);
  ASSERT_GT(r.prompt.size(), 720u);
  ASSERT_LT(r.prompt.size(), 1100u);
  r.max_tokens = 8;
  auto rejected = full->Submit(r);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(rejected.status().message()).find("KV cache"), std::string::npos);
  auto accepted = duo->Submit(r);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(Drain(**accepted).size(), 8u);
}

}  // namespace
}  // namespace loom::engine
