// The metrics exposition: vLLM's names under loom_, values that follow the engine's stats and
// finished requests, and output that `promtool check metrics` accepts.
#include "server/metrics/metrics.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace loom::server {
namespace {

std::string Line(const std::string& text, const std::string& prefix) {
  size_t p = text.find("\n" + prefix);
  if (p == std::string::npos) return "";
  size_t e = text.find('\n', p + 1);
  return text.substr(p + 1, e - p - 1);
}

TEST(MetricsTest, FollowsStatsAndFinishedRequests) {
  ServerMetrics m("SmolLM2");
  engine::EngineStats s;
  s.num_running = 3;
  s.num_waiting = 2;
  s.kv_cache_usage = 0.25;
  s.prompt_tokens_total = 100;
  s.generation_tokens_total = 40;
  engine::RequestTimings t;
  t.finish_reason = "length";
  t.prompt_tokens = 10;
  t.completion_tokens = 3;
  t.ttft_seconds = 0.05;
  t.e2e_seconds = 0.2;
  t.queue_seconds = 0.01;
  t.inter_token_seconds = {0.01, 0.02};
  m.OnFinished(t);
  std::string out = m.Render(s);
  EXPECT_EQ(Line(out, "loom_num_requests_running{"),
            "loom_num_requests_running{model_name=\"SmolLM2\"} 3");
  EXPECT_EQ(Line(out, "loom_num_requests_waiting{"),
            "loom_num_requests_waiting{model_name=\"SmolLM2\"} 2");
  EXPECT_NE(out.find("loom_kv_cache_usage_perc{model_name=\"SmolLM2\"} 0.25"), std::string::npos);
  EXPECT_NE(out.find("loom_prompt_tokens_total{model_name=\"SmolLM2\"} 100"), std::string::npos);
  EXPECT_NE(
      out.find("loom_request_success_total{finished_reason=\"length\",model_name=\"SmolLM2\"} 1"),
      std::string::npos)
      << out;
  EXPECT_NE(out.find("loom_inter_token_latency_seconds_count{model_name=\"SmolLM2\"} 2"),
            std::string::npos);
  EXPECT_NE(
      out.find("loom_time_to_first_token_seconds_bucket{model_name=\"SmolLM2\",le=\"0.06\"} 1"),
      std::string::npos)
      << out;
  // Counters add only what is new.
  s.prompt_tokens_total = 130;
  out = m.Render(s);
  EXPECT_NE(out.find("loom_prompt_tokens_total{model_name=\"SmolLM2\"} 130"), std::string::npos);
}

TEST(MetricsTest, PromtoolAcceptsTheOutput) {
  if (!std::ifstream("/usr/bin/promtool").good()) {
    GTEST_FAIL() << "promtool is missing: tools/setup.sh installs Debian's prometheus package";
  }
  ServerMetrics m("m");
  engine::RequestTimings t;
  t.finish_reason = "stop";
  t.completion_tokens = 2;
  t.inter_token_seconds = {0.1};
  m.OnFinished(t);
  const std::string path = testing::TempDir() + "/metrics.txt";
  std::ofstream(path) << m.Render(engine::EngineStats{});
  FILE* p = popen(("/usr/bin/promtool check metrics < " + path + " 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string msg;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) msg += buf;
  EXPECT_EQ(pclose(p), 0) << msg;
}

TEST(MetricsTest, KvRetrievalAndStreamingBytesGauges) {
  ServerMetrics m("SmolLM2");
  engine::EngineStats s;
  s.kv_retrieval_bytes = 1 << 20;
  s.kv_streaming_bytes = 3 * 4096;
  const std::string out = m.Render(s);
  EXPECT_EQ(Line(out, "loom_kv_cache_retrieval_bytes{"),
            "loom_kv_cache_retrieval_bytes{model_name=\"SmolLM2\"} 1048576");
  EXPECT_EQ(Line(out, "loom_kv_cache_streaming_bytes{"),
            "loom_kv_cache_streaming_bytes{model_name=\"SmolLM2\"} 12288");
}

}  // namespace
}  // namespace loom::server
