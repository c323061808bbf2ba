// The serving engine on the real model: continuous batching gives every request exactly the tokens
// it gets alone, chunked prefill keeps decodes flowing, cancellation and dropped streams free the
// sequence, the admission queue is bounded, and bad requests are clear errors.
#include "engine/serving/engine.h"

#include <fstream>
#include <thread>

#include "gtest/gtest.h"

namespace loom::engine {
namespace {

constexpr char kModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

struct Outcome {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish_reason;
  Usage usage;
  int events = 0;
};

Outcome Drain(RequestStream& s) {
  Outcome o;
  StreamEvent ev;
  while (s.Next(&ev)) {
    ++o.events;
    if (ev.token >= 0) o.tokens.push_back(ev.token);
    o.text += ev.text;
    if (ev.finished) {
      o.finish_reason = ev.finish_reason;
      o.usage = ev.usage;
    }
  }
  return o;
}

// Stats trail the streams by at most one engine step.
void WaitIdle(const Engine& e) {
  for (int i = 0; i < 500 && (e.Stats().num_running > 0 || e.Stats().num_waiting > 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::ifstream(kModel).good()) GTEST_SKIP() << kModel << " is missing";
  }
  std::unique_ptr<Engine> Make(EngineConfig cfg) {
    auto model = Model::Load(kModel);
    EXPECT_TRUE(model.ok()) << model.status();
    auto e = Engine::Create(cfg, std::move(*model));
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  Request Greedy(Engine& e, const std::string& text, int max_tokens) {
    Request r;
    r.prompt = e.tokenizer().Encode(text, true, false);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    return r;
  }
};

const char* kPrompts[] = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "1, 2, 3, 5, 8, 13,",
    "The three primary colours are",
    "Water boils at",
    "In 1969, the first humans",
    "My favourite book is",
};

TEST_F(EngineTest, ConcurrentRequestsGetTheirSoloTokens) {
  EngineConfig cfg;
  cfg.n_threads = 2;
  cfg.max_num_seqs = 8;
  cfg.max_batched_tokens = 16;  // prompts arrive in chunks while others decode
  auto engine = Make(cfg);
  std::vector<Outcome> solo;
  for (const char* p : kPrompts) {
    auto s = engine->Submit(Greedy(*engine, p, 12));
    ASSERT_TRUE(s.ok()) << s.status();
    solo.push_back(Drain(**s));
  }
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const char* p : kPrompts) streams.push_back(*engine->Submit(Greedy(*engine, p, 12)));
  for (size_t i = 0; i < streams.size(); ++i) {
    Outcome o = Drain(*streams[i]);
    EXPECT_EQ(o.tokens, solo[i].tokens) << kPrompts[i];
    EXPECT_EQ(o.text, solo[i].text) << kPrompts[i];
    EXPECT_EQ(o.finish_reason, solo[i].finish_reason);
  }
  EXPECT_EQ(solo[0].text.rfind(" Paris.", 0), 0u) << solo[0].text;
  WaitIdle(*engine);
  EngineStats st = engine->Stats();
  EXPECT_EQ(st.num_running, 0);
  EXPECT_EQ(st.num_waiting, 0);
  EXPECT_GT(st.generation_tokens_total, 0);
}

TEST_F(EngineTest, LengthStopAndUsage) {
  auto engine = Make(EngineConfig{.n_threads = 2});
  Outcome o = Drain(**engine->Submit(Greedy(*engine, "The capital of France is", 5)));
  EXPECT_EQ(o.finish_reason, "length");
  EXPECT_EQ(o.usage.completion_tokens, 5);
  EXPECT_EQ(o.usage.prompt_tokens, 5);
  Request r = Greedy(*engine, "The capital of France is", 20);
  r.stop = {"."};
  Outcome s = Drain(**engine->Submit(r));
  EXPECT_EQ(s.finish_reason, "stop");
  EXPECT_EQ(s.text, " Paris");
}

TEST_F(EngineTest, CancelAndDroppedStreamsFreeTheSequence) {
  auto engine = Make(EngineConfig{.n_threads = 2});
  auto s = *engine->Submit(Greedy(*engine, "Once upon a time", 1000));
  StreamEvent ev;
  ASSERT_TRUE(s->Next(&ev));
  s->Cancel();
  Outcome rest = Drain(*s);
  EXPECT_EQ(rest.finish_reason, "cancelled");
  {
    auto dropped = *engine->Submit(Greedy(*engine, "Once upon a time", 1000));
    ASSERT_TRUE(dropped->Next(&ev));
  }  // the reader goes away
  WaitIdle(*engine);
  EXPECT_EQ(engine->Stats().num_running, 0);
  EXPECT_LT(engine->Stats().generation_tokens_total, 200);
}

TEST_F(EngineTest, AdmissionQueueIsBounded) {
  EngineConfig cfg;
  cfg.n_threads = 2;
  cfg.max_num_seqs = 1;
  cfg.max_waiting = 2;
  auto engine = Make(cfg);
  std::vector<std::shared_ptr<RequestStream>> held;
  int exhausted = 0;
  for (int i = 0; i < 8; ++i) {
    auto s = engine->Submit(Greedy(*engine, "Count to ten:", 200));
    if (s.ok()) {
      held.push_back(*s);
    } else {
      EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted) << s.status();
      ++exhausted;
    }
  }
  EXPECT_GE(exhausted, 4);
  for (auto& s : held) s->Cancel();
  for (auto& s : held) EXPECT_EQ(Drain(*s).finish_reason, "cancelled");
}

TEST_F(EngineTest, BadRequestsAreClearErrors) {
  EngineConfig cfg;
  cfg.n_threads = 1;
  cfg.max_context = 64;
  cfg.max_tokens_cap = 32;
  auto engine = Make(cfg);
  Request empty;
  EXPECT_EQ(engine->Submit(empty).status().code(), absl::StatusCode::kInvalidArgument);
  Request bad_id = Greedy(*engine, "hi", 4);
  bad_id.prompt.push_back(1 << 20);
  EXPECT_NE(engine->Submit(bad_id).status().message().find("out of range"), std::string::npos);
  Request too_long = Greedy(*engine, std::string(400, 'a'), 4);
  auto st = engine->Submit(too_long).status();
  EXPECT_NE(st.message().find("maximum context length is 64"), std::string::npos) << st;
  Request cap = Greedy(*engine, "hi", 33);
  EXPECT_NE(engine->Submit(cap).status().message().find("max_tokens 33"), std::string::npos);
  Request temp = Greedy(*engine, "hi", 4);
  temp.sampling.temperature = 9;
  EXPECT_EQ(engine->Submit(temp).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, PrefixCacheReusesASharedPrompt) {
  EngineConfig cfg;
  cfg.n_threads = 2;
  const std::string prefix =
      "You are a helpful assistant. Answer briefly and precisely. The following is a list of "
      "facts about the solar system: the Sun is a star; Mercury is the closest planet to it; "
      "Venus is the hottest planet; Earth has one moon; Mars has two small moons.";
  auto engine = Make(cfg);
  Outcome first = Drain(
      **engine->Submit(Greedy(*engine, prefix + " Question: how many moons has Mars? Answer:", 8)));
  EXPECT_EQ(first.usage.cached_prompt_tokens, 0);
  Request second = Greedy(*engine, prefix + " Question: which planet is the hottest? Answer:", 8);
  const int prompt_len = static_cast<int>(second.prompt.size());
  Outcome warm = Drain(**engine->Submit(second));
  EXPECT_GT(warm.usage.cached_prompt_tokens, 32);
  EXPECT_LT(warm.usage.cached_prompt_tokens, prompt_len);
  EXPECT_EQ(warm.usage.cached_prompt_tokens % cfg.kv_block_size, 0);
  WaitIdle(*engine);
  EngineStats st = engine->Stats();
  EXPECT_GT(st.prefix_cache_hits, 0) << st.prefix_cache_queries << " " << prompt_len;
  EXPECT_GE(st.prefix_cache_queries, st.prefix_cache_hits);
  // The same request on a cold engine: identical tokens, nothing cached.
  auto cold_engine = Make(cfg);
  Outcome cold = Drain(**cold_engine->Submit(second));
  EXPECT_EQ(cold.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(warm.tokens, cold.tokens);
  EXPECT_EQ(warm.text, cold.text);
  EXPECT_GT(cold.tokens.size(), 1u) << cold.text;
}

TEST_F(EngineTest, PreemptionUnderATinyKvBudgetKeepsEveryOutput) {
  EngineConfig roomy;
  roomy.n_threads = 2;
  auto solo_engine = Make(roomy);
  std::vector<Outcome> solo;
  for (const char* p : kPrompts)
    solo.push_back(Drain(**solo_engine->Submit(Greedy(*solo_engine, p, 16))));
  const ModelConfig& mc = solo_engine->model().config();
  const int64_t bytes_per_token = int64_t{2} * mc.n_layers * mc.kv_dim() * 2;
  EngineConfig tight;
  tight.n_threads = 2;
  tight.max_num_seqs = 8;
  tight.max_batched_tokens = 16;
  tight.kv_block_size = 4;
  tight.kv_cache_bytes = 16 * 4 * bytes_per_token;  // 16 blocks: 64 positions for 8 requests
  auto engine = Make(tight);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const char* p : kPrompts) {
    auto s = engine->Submit(Greedy(*engine, p, 16));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    Outcome o = Drain(*streams[i]);
    EXPECT_EQ(o.tokens, solo[i].tokens) << kPrompts[i];
    EXPECT_EQ(o.text, solo[i].text) << kPrompts[i];
    EXPECT_EQ(o.finish_reason, solo[i].finish_reason);
  }
  WaitIdle(*engine);
  EngineStats st = engine->Stats();
  EXPECT_GT(st.preemptions, 0);
  // Idle: no live sequence holds a block (prefix-cached blocks count as free).
  EXPECT_EQ(st.kv_cache_usage, 0.0);
  EXPECT_EQ(st.num_running, 0);
  EXPECT_EQ(st.num_waiting, 0);
}

TEST_F(EngineTest, DrainFinishesInFlightThenRefuses) {
  auto engine = Make(EngineConfig{.n_threads = 2});
  auto s = *engine->Submit(Greedy(*engine, "The capital of France is", 8));
  EXPECT_TRUE(engine->Drain(std::chrono::seconds(30)));
  EXPECT_EQ(Drain(*s).finish_reason, "length");
  EXPECT_EQ(engine->Submit(Greedy(*engine, "x", 2)).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace loom::engine
