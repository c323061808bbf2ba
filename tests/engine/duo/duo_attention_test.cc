// DuoAttention in the CPU forward, on a tiny random-weight Llama written as GGUF in memory:
// sparsity 0 equals plain attention exactly; streaming heads keep exactly sink + recent positions;
// chunked prefill equals single-chunk prefill for both head types, contiguous and paged; with
// every head streaming and a context within sink + recent the output equals full attention;
// streaming heads follow the sink + recent rule (against a naive reference of that rule).
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/backend.h"
#include "engine/model/duo_layout.h"
#include "engine/model/kv_pool.h"
#include "engine/model/kv_sequence.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "tests/engine/model/tiny_llama.h"

namespace loom::engine {
namespace {

using kernels::DType;

constexpr int kLayers = 3, kDim = 96, kHeads = 6, kKvHeads = 3, kFfn = 96, kVocab = 80;
constexpr int kHeadDim = kDim / kHeads;  // 16; two query heads per KV head

std::vector<int32_t> Tokens(int n, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 29 + salt * 7 + 3) % kVocab;
  return t;
}

class DuoTiny : public ::testing::Test {
 protected:
  void SetUp() override {
    TinyLlamaSpec spec;
    spec.name = "tiny-duo";
    spec.layers = kLayers, spec.dim = kDim, spec.heads = kHeads, spec.kv_heads = kKvHeads;
    spec.ffn = kFfn, spec.vocab = kVocab, spec.seed = 7;
    // Large Q/K weights: peaked attention, so that dropping positions shows in the logits.
    spec.scale = [](const std::string& t) {
      return t == "attn_q" || t == "attn_k" ? 0.8f : t == "attn_v" ? 0.5f : 0.3f;
    };
    auto model = BuildTinyLlama(spec);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    auto backend = CreateBackend("cpu", *model_, {.n_threads = 2});
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }

  std::shared_ptr<const DuoLayout> Layout(std::vector<bool> streaming, int sink, int recent) {
    auto d = DuoLayout::Create(model_->config(), std::move(streaming), sink, recent);
    EXPECT_TRUE(d.ok()) << d.status();
    return *d;
  }
  // Layer 0: head 1 streams; layer 1: heads 0 and 2; layer 2: all three.
  std::shared_ptr<const DuoLayout> Mixed(int sink, int recent) {
    return Layout({false, true, false, true, false, true, true, true, true}, sink, recent);
  }

  // Feeds `tokens` in chunks of the given sizes (cycled), all logits, then `decode` greedy steps.
  std::vector<float> Run(KvView* kv, const std::vector<int32_t>& tokens, std::vector<int> chunks,
                         int decode = 0) {
    std::vector<float> all, logits;
    size_t at = 0;
    for (size_t c = 0; at < tokens.size(); ++c) {
      const size_t n = std::min<size_t>(chunks[c % chunks.size()], tokens.size() - at);
      SeqBatch b{kv, std::span<const int32_t>(tokens.data() + at, n), true};
      absl::Status st = backend_->Forward({&b, 1}, &logits);
      EXPECT_TRUE(st.ok()) << st;
      all.insert(all.end(), logits.begin(), logits.end());
      at += n;
    }
    for (int i = 0; i < decode; ++i) {
      const auto last = all.end() - kVocab;
      const int32_t next = static_cast<int32_t>(std::max_element(last, all.end()) - last);
      SeqBatch b{kv, std::span<const int32_t>(&next, 1), false};
      EXPECT_TRUE(backend_->Forward({&b, 1}, &logits).ok());
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  }

  static float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      m = std::max(m, std::abs(a[i] - b[i]));
    }
    return m;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Backend> backend_;
};

TEST_F(DuoTiny, SparsityZeroEqualsPlainAttentionExactly) {
  const auto tokens = Tokens(40, 1);
  KvSequence plain(model_->config(), 64);
  KvSequence duo(model_->config(), 64, Layout(std::vector<bool>(kLayers * kKvHeads, false), 4, 8));
  EXPECT_EQ(duo.streaming(), nullptr);
  const auto a = Run(&plain, tokens, {40}, 8);
  const auto b = Run(&duo, tokens, {40}, 8);
  EXPECT_EQ(a, b);
}

TEST_F(DuoTiny, PagedRetrievalRowsAreSmaller) {
  auto duo = Mixed(4, 8);
  KvPool full(model_->config(), 4, 8);
  KvPool reduced(model_->config(), 4, 8, duo);
  // 9 KV heads in all, 6 streaming: 3/9 of the paged bytes.
  EXPECT_EQ(reduced.bytes() * 9, full.bytes() * 3);
  EXPECT_EQ(duo->RetrievalBytesPerToken(), 2 * 3 * kHeadDim * 2);
  EXPECT_EQ(duo->StreamingBytesPerSequence(), 2 * 6 * kHeadDim * 12 * 2);
}

TEST_F(DuoTiny, StreamingCacheKeepsExactlySinkAndRecent) {
  const int sink = 4, recent = 8;
  auto duo = Mixed(sink, recent);
  const auto tokens = Tokens(33, 2);
  KvSequence plain(model_->config(), 64);
  KvSequence kv(model_->config(), 64, duo);
  Run(&plain, tokens, {33});
  Run(&kv, tokens, {7, 5, 7, 5, 6, 1, 1, 1});  // 30 positions in chunks, then 3 one at a time
  ASSERT_EQ(kv.size(), 33);
  StreamingKv* sk = kv.streaming();
  ASSERT_NE(sk, nullptr);
  std::vector<int> held;
  for (int p = 0; p < kv.size(); ++p) {
    if (sk->Holds(p, kv.size())) held.push_back(p);
  }
  EXPECT_EQ(held, (std::vector<int>{0, 1, 2, 3, 25, 26, 27, 28, 29, 30, 31, 32}));
  // Layer 0's K and V only depend on the token and its position: every held position's ring row
  // equals the full cache's row (RoPE'd at the original position) for each streaming head.
  for (int p : held) {
    const int h = 1;  // layer 0's streaming head
    const int s = duo->Slot(0, h);
    for (int i = 0; i < kHeadDim; ++i) {
      ASSERT_EQ(sk->K(0, p)[s * kHeadDim + i], plain.K(0, p)[h * kHeadDim + i]) << "pos " << p;
      ASSERT_EQ(sk->V(0, p)[s * kHeadDim + i], plain.V(0, p)[h * kHeadDim + i]) << "pos " << p;
    }
  }
  // Retrieval heads keep every position, at their slots in narrower rows.
  for (int p = 0; p < kv.size(); ++p) {
    for (int h : {0, 2}) {  // layer 0's retrieval heads
      const int s = duo->Slot(0, h);
      for (int i = 0; i < kHeadDim; ++i) {
        ASSERT_EQ(kv.K(0, p)[s * kHeadDim + i], plain.K(0, p)[h * kHeadDim + i]);
      }
    }
  }
}

TEST_F(DuoTiny, ChunkedPrefillEqualsSingleChunk) {
  auto duo = Mixed(4, 8);
  const auto tokens = Tokens(45, 3);
  KvSequence one(model_->config(), 64, duo);
  const auto want = Run(&one, tokens, {45}, 4);
  for (const std::vector<int>& chunks :
       {std::vector<int>{1}, std::vector<int>{7}, std::vector<int>{3, 13, 2}, {16}}) {
    KvSequence kv(model_->config(), 64, duo);
    EXPECT_LE(MaxDiff(want, Run(&kv, tokens, chunks, 4)), 1e-5f) << "chunk " << chunks[0];
  }
  // Paged, with blocks of 4 in a scrambled order, and streaming caches from outside.
  KvPool pool(model_->config(), 4, 32, duo);
  std::vector<int32_t> table;
  for (int i = 0; i < 13; ++i) table.push_back((i * 7 + 3) % 32);
  StreamingKv sk(duo);
  PagedKvView paged(&pool, table, 0, &sk);
  EXPECT_LE(MaxDiff(want, Run(&paged, tokens, {5, 11}, 4)), 1e-5f);
}

TEST_F(DuoTiny, AllStreamingWithinWindowEqualsFullAttention) {
  const auto tokens = Tokens(30, 4);
  auto duo = Layout(std::vector<bool>(kLayers * kKvHeads, true), 8, 32);  // window 40
  KvSequence plain(model_->config(), 64);
  KvSequence kv(model_->config(), 64, duo);
  EXPECT_EQ(kv.RowElems(0), 0);
  const auto a = Run(&plain, tokens, {30}, 10);  // 40 positions at most
  const auto b = Run(&kv, tokens, {9, 4}, 10);
  EXPECT_LE(MaxDiff(a, b), 1e-5f);
  // Past the window the streaming heads lose the middle: the logits move.
  KvSequence plain2(model_->config(), 128);
  auto small = Layout(std::vector<bool>(kLayers * kKvHeads, true), 2, 4);
  KvSequence kv2(model_->config(), 128, small);
  const auto long_tokens = Tokens(60, 5);
  EXPECT_GT(MaxDiff(Run(&plain2, long_tokens, {60}), Run(&kv2, long_tokens, {60})), 1e-3f);
}

// The rule's other end: with sink 0 and recent 1 a streaming head attends to its own position
// only, so an all-streaming model's output for a token ignores every earlier token.
TEST_F(DuoTiny, RecentOneSinkZeroSeesOnlyItself) {
  auto duo = Layout(std::vector<bool>(kLayers * kKvHeads, true), 0, 1);
  std::vector<int32_t> a = Tokens(20, 6), b = Tokens(20, 9);
  b.back() = a.back();
  KvSequence ka(model_->config(), 32, duo), kb(model_->config(), 32, duo);
  const auto la = Run(&ka, a, {6});
  const auto lb = Run(&kb, b, {20});
  EXPECT_EQ(std::vector<float>(la.end() - kVocab, la.end()),
            std::vector<float>(lb.end() - kVocab, lb.end()));
}

TEST_F(DuoTiny, RejectsMissingStreamingCache) {
  auto duo = Mixed(4, 8);
  KvPool pool(model_->config(), 4, 4, duo);
  std::vector<int32_t> table = {0, 1};
  PagedKvView view(&pool, table, 0, nullptr);
  const auto tokens = Tokens(3, 1);
  std::vector<float> logits;
  SeqBatch b{&view, tokens, false};
  EXPECT_EQ(backend_->Forward({&b, 1}, &logits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(view.size(), 0);
}

}  // namespace
}  // namespace loom::engine
