// The pipeline on the real SmolLM2-135M: the split with the real tokenizer on a haystack essay
// (budget, nothing lost, each piece tokenized about once), a whole run on a ~6K-token haystack
// with a pass key at context_window 2048 (completes, map results parse, progress in order; the
// answer is printed, not asserted: a 135M model often misses), and a prompt cancel. Skips without
// the model or the essays (LOOM_HAYSTACK_DIR, default ../shared/data/haystack/paul_graham_essays).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/serving/engine.h"
#include "gtest/gtest.h"
#include "pipelines/mapreduce/engine_generator.h"
#include "pipelines/mapreduce/mapreduce.h"
#include "pipelines/mapreduce/split.h"

namespace loom::pipelines::mapreduce {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr char kNeedle[] = "The pass key is 71432. Remember it. 71432 is the pass key.";

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string HaystackDir() {
  const char* env = std::getenv("LOOM_HAYSTACK_DIR");
  return env != nullptr ? env : "../shared/data/haystack/paul_graham_essays";
}

// Essays in name order, concatenated until at least `min_bytes`.
std::string Essays(size_t min_bytes) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(HaystackDir(), ec)) {
    if (e.path().extension() == ".txt") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string out;
  for (const fs::path& f : files) {
    if (out.size() >= min_bytes) break;
    std::ifstream in(f, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    if (!out.empty()) out += "\n";
    out += ss.str();
  }
  return out;
}

std::string WithoutBlankLines(const std::string& s) {
  std::string out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    const std::string line = s.substr(start, nl - start);
    if (line.find_first_not_of(" \t\r\f") != std::string::npos) {
      if (!out.empty()) out += '\n';
      out += line;
    }
    start = nl + 1;
  }
  return out;
}

class MapReduceModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::ifstream(kModel).good()) return;
    auto model = engine::Model::Load(kModel);
    ASSERT_TRUE(model.ok()) << model.status();
    engine::EngineConfig cfg;
    cfg.n_threads = 2;
    cfg.max_context = 4096;
    cfg.kv_cache_bytes = 512ll << 20;
    auto e = engine::Engine::Create(cfg, std::move(*model));
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e).release();
    auto g = EngineGenerator::Create(engine_);
    ASSERT_TRUE(g.ok()) << g.status();
    gen_ = std::move(*g).release();
  }
  static void TearDownTestSuite() {
    delete gen_;
    delete engine_;
    gen_ = nullptr;
    engine_ = nullptr;
  }
  void SetUp() override {
    if (engine_ == nullptr) GTEST_SKIP() << kModel << " is missing";
  }

  static engine::Engine* engine_;
  static EngineGenerator* gen_;
};

engine::Engine* MapReduceModelTest::engine_ = nullptr;
EngineGenerator* MapReduceModelTest::gen_ = nullptr;

TEST_F(MapReduceModelTest, SplitsAnEssayWithTheRealTokenizer) {
  const std::string doc = Essays(30000);
  if (doc.empty()) GTEST_SKIP() << "no essays in " << HaystackDir();
  std::atomic<int64_t> bytes_counted{0};
  TokenCounter count = SequentialCounter([&](std::string_view s) {
    bytes_counted += static_cast<int64_t>(s.size());
    return gen_->CountTokens(s);
  });
  const auto start = Clock::now();
  auto chunks = SplitDocument(doc, 400, count);
  const double seconds = Since(start);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  std::string joined;
  int64_t tokens = 0;
  for (size_t i = 0; i < chunks->size(); ++i) {
    const Chunk& c = (*chunks)[i];
    EXPECT_LE(c.tokens, 400);
    EXPECT_EQ(c.tokens, *gen_->CountTokens(c.text));
    if (i > 0 && c.starts_paragraph) joined += '\n';
    joined += c.text;
    tokens += c.tokens;
  }
  EXPECT_EQ(joined, WithoutBlankLines(doc));
  // Each piece once, each chunk once more, the last two chunks' sentences for rebalancing.
  EXPECT_LE(bytes_counted.load(), 3 * static_cast<int64_t>(doc.size()));
  std::printf(
      "[split] %zu bytes, %lld tokens -> %zu chunks of <= 400 tokens in %.3f s "
      "(tokenized %.2fx the document)\n",
      doc.size(), static_cast<long long>(tokens), chunks->size(), seconds,
      static_cast<double>(bytes_counted.load()) / doc.size());
}

TEST_F(MapReduceModelTest, FindsThePassKeyInASixThousandTokenHaystack) {
  std::string doc = Essays(25000);
  if (doc.empty()) GTEST_SKIP() << "no essays in " << HaystackDir();
  doc.resize(std::min<size_t>(doc.size(), 25000));
  doc.erase(doc.rfind('\n'));  // end on a whole line
  const size_t at = doc.find('\n', doc.size() * 6 / 10);
  doc.insert(at + 1, absl::StrCat(kNeedle, "\n"));
  const int doc_tokens = *gen_->CountTokens(doc);

  MapReduceOptions opts;
  opts.context_window = 2048;
  opts.max_tokens = 120;
  opts.task = "retrieval";
  opts.evidence = "grounded";  // as bench/mapreduce runs it
  std::vector<ProgressEvent> events;
  std::vector<double> event_times;
  const auto start = Clock::now();
  auto r = RunMapReduce(*gen_, doc, "What is the pass key?", opts, [&](const ProgressEvent& e) {
    events.push_back(e);
    event_times.push_back(Since(start));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  const int n = r->num_chunks;
  EXPECT_GE(n, 3);

  // split, map x n, [collapse...], reduce (start, end).
  ASSERT_GE(events.size(), static_cast<size_t>(n) + 3);
  EXPECT_EQ(events.front().stage, "split");
  EXPECT_EQ(events.front().total, n);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(events[1 + i].stage, "map");
    EXPECT_EQ(events[1 + i].done, i + 1);
  }
  for (size_t i = n + 1; i + 2 < events.size(); ++i) EXPECT_EQ(events[i].stage, "collapse");
  EXPECT_EQ(events[events.size() - 2].stage, "reduce");
  EXPECT_EQ(events.back().stage, "reduce");
  EXPECT_EQ(events.back().done, 1);

  int parsed = 0;
  for (const ChunkResult& c : r->chunks) parsed += c.parsed;
  EXPECT_EQ(parsed, n) << "under the grammar every map output parses";
  // Greedy decoding on batch-invariant kernels makes the run deterministic, so the answer is a
  // property of the pipeline and the model: the grounded evidence and the answer-first reduce
  // are what let SmolLM2-135M find this key (docs/mapreduce.md).
  const bool found = r->answer.find("71432") != std::string::npos;
  EXPECT_TRUE(found) << "answer: " << r->answer;
  // The first map call ran alone, so the others read the prompt head from the prefix cache.
  EXPECT_GT(r->cached_prompt_tokens, 0);
  std::printf("[run] %d-token document, %d chunks, %d/%d map outputs parsed, %d collapse rounds\n",
              doc_tokens, n, parsed, n, r->collapse_rounds);
  for (const ChunkResult& c : r->chunks) {
    std::printf("[map %d] conf %.1f%s%s\n  extracted: %s\n  answer: %s\n", c.index, c.confidence,
                c.no_information ? " (no information)" : "", c.parsed ? "" : " (UNPARSED)",
                c.extracted.substr(0, 160).c_str(), c.answer.substr(0, 100).c_str());
  }
  std::printf("[reduce] rationale: %s\n[reduce] answer: %s\n", r->rationale.substr(0, 200).c_str(),
              r->answer.substr(0, 200).c_str());
  std::printf(
      "[result] key %s; confidence %.1f; %lld prompt + %lld completion tokens; %.1f s "
      "(split %.1f s, last map at %.1f s)\n",
      found ? "FOUND" : "not found", r->confidence, static_cast<long long>(r->prompt_tokens),
      static_cast<long long>(r->completion_tokens), r->seconds, event_times.front(),
      event_times[n]);
}

TEST_F(MapReduceModelTest, CancelReturnsPromptly) {
  std::string doc = Essays(25000);
  if (doc.empty()) GTEST_SKIP() << "no essays in " << HaystackDir();
  MapReduceOptions opts;
  opts.context_window = 2048;
  opts.max_tokens = 120;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> split_done{false};
  absl::StatusOr<MapReduceResult> r;
  std::thread runner([&] {
    r = RunMapReduce(
        *gen_, doc, "What is the pass key?", opts,
        [&](const ProgressEvent& e) {
          if (e.stage == "split") split_done.store(true);
        },
        &cancelled);
  });
  while (!split_done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // map calls are running
  const auto t = Clock::now();
  cancelled.store(true);
  runner.join();
  const double seconds = Since(t);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_LT(seconds, 3.0);
  std::printf("[cancel] returned %.3f s after the cancel\n", seconds);
  // The engine is idle again.
  for (int i = 0; i < 100 && engine_->Stats().num_running > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(engine_->Stats().num_running, 0);
}

}  // namespace
}  // namespace loom::pipelines::mapreduce
