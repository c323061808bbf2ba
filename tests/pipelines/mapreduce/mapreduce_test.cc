// RunMapReduce on a scripted generator (no model): bad input is rejected up front, every call fits
// the context, map calls run concurrently, progress arrives in order, no-information results are
// dropped, collapse runs when needed and is bounded, errors and cancellation stop the run.
#include "pipelines/mapreduce/mapreduce.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace loom::pipelines::mapreduce {
namespace {

using std::chrono::milliseconds;

int Words(std::string_view s) {
  int n = 0;
  bool in_word = false;
  for (char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++n;
    if (c == '\n') ++n;
    in_word = !space;
  }
  return n;
}

std::string Repeat(std::string_view word, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) absl::StrAppend(&out, i ? " " : "", std::string(word));
  return out;
}

std::string Structured(std::string_view extracted, std::string_view answer, double score) {
  return absl::StrCat("Extracted Information: ", std::string(extracted),
                      "\nRationale: because\nAnswer: ", std::string(answer),
                      "\nConfidence Score: ", score);
}

enum class Stage { kMap, kCollapse, kReduce };

// Counts tokens as words; answers by a script; checks that every prompt fits the context.
class FakeGenerator : public Generator {
 public:
  using Script = std::function<absl::StatusOr<std::string>(Stage, const std::string& prompt,
                                                           const GenerateCall&)>;
  FakeGenerator(int context, Script script) : context_(context), script_(std::move(script)) {}

  absl::StatusOr<GenerateResult> Generate(const GenerateCall& call) override {
    const std::string& prompt = call.messages.at(0).content;
    const int prompt_tokens = *CountPromptTokens(call.messages);
    if (prompt_tokens + call.max_tokens > context_) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt ", prompt_tokens, " + ", call.max_tokens, " > ", context_));
    }
    const Stage stage = prompt.find("Merge the notes") != std::string::npos ? Stage::kCollapse
                        : prompt.find("Give the final answer") != std::string::npos ? Stage::kReduce
                                                                                    : Stage::kMap;
    size_t me;
    {
      std::lock_guard<std::mutex> lock(mu_);
      me = calls.size();
      calls.push_back({stage, prompt, call.grammar, clock_++, -1});
      max_in_flight = std::max(max_in_flight, ++in_flight_);
    }
    absl::StatusOr<std::string> text = script_(stage, prompt, call);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --in_flight_;
      calls[me].ended = clock_++;
    }
    if (!text.ok()) return text.status();
    GenerateResult r;
    r.text = *text;
    r.prompt_tokens = prompt_tokens;
    r.cached_prompt_tokens = prompt_tokens / 4;  // as if a prefix cache served a quarter
    r.completion_tokens = Words(*text);
    r.finish_reason = "stop";
    return r;
  }
  absl::StatusOr<int> CountTokens(std::string_view text) override { return Words(text); }
  int context_length() const override { return context_; }
  std::string name() const override { return "fake"; }

  struct Call {
    Stage stage;
    std::string prompt;
    std::string grammar;
    int started = 0;  // on a clock that ticks at every call's start and end
    int ended = 0;
  };
  std::vector<Call> Calls(Stage stage) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Call> out;
    for (const Call& c : calls) {
      if (c.stage == stage) out.push_back(c);
    }
    return out;
  }

  std::mutex mu_;
  std::vector<Call> calls;
  int max_in_flight = 0;

 private:
  const int context_;
  Script script_;
  int in_flight_ = 0;
  int clock_ = 0;
};

// The map chunk inside a map prompt.
std::string ChunkOf(const std::string& prompt) {
  const size_t b = prompt.find("\"\"\"\n");
  const size_t e = prompt.find("\n\"\"\"", b + 4);
  return b == std::string::npos || e == std::string::npos ? "" : prompt.substr(b + 4, e - b - 4);
}

// Finds the key when the chunk has it; the reduce repeats the best answer it sees.
absl::StatusOr<std::string> PasskeyScript(Stage stage, const std::string& prompt,
                                          const GenerateCall&) {
  std::this_thread::sleep_for(milliseconds(5));
  switch (stage) {
    case Stage::kMap:
      if (ChunkOf(prompt).find("71432") != std::string::npos) {
        return Structured("The pass key is 71432.", "71432", 5.0);
      }
      return Structured("nothing", kNoInformation, 0.0);
    case Stage::kCollapse:
      return Structured("merged", prompt.find("Answer: 71432") != std::string::npos ? "71432" : "?",
                        4.0);
    case Stage::kReduce:
      return std::string(prompt.find("Answer: 71432") != std::string::npos
                             ? "Rationale: a part states it.\nAnswer: 71432"
                             : "Rationale: nothing found.\nAnswer: unknown");
  }
  return absl::InternalError("unreachable");
}

std::string Haystack(int paragraphs, int needle_at) {
  std::string doc;
  for (int p = 0; p < paragraphs; ++p) {
    if (p) doc += "\n";
    if (p == needle_at) doc += "The pass key is 71432. Remember it. 71432 is the pass key. ";
    for (int s = 0; s < 5; ++s) {
      absl::StrAppend(&doc, "The grass is green and the sky is blue number ", p, " ", s, ". ");
    }
  }
  return doc;
}

MapReduceOptions Options(int window) {
  MapReduceOptions o;
  o.context_window = window;
  o.max_tokens = 100;
  o.task = "retrieval";
  return o;
}

constexpr char kQuestion[] = "What is the pass key?";

TEST(MapReduceTest, RejectsBadInput) {
  FakeGenerator gen(100000, PasskeyScript);
  auto run = [&](std::string_view doc, std::string_view q, MapReduceOptions o) {
    return RunMapReduce(gen, doc, q, o, nullptr).status();
  };
  const MapReduceOptions ok = Options(2000);
  struct Case {
    std::string doc, question;
    std::string expect;
  };
  MapReduceOptions small_max = ok;
  small_max.max_document_bytes = 10;
  const std::vector<Case> cases = {
      {"", kQuestion, "document is empty"},
      {" \n\t\r\n", kQuestion, "document is empty"},
      {std::string("abc\0def", 7), kQuestion, "NUL"},
      {"abc \xff\xfe", kQuestion, "not valid UTF-8 (at byte 4)"},
      {"\xC0\xAF", kQuestion, "UTF-8"},      // overlong '/'
      {"\xED\xA0\x80", kQuestion, "UTF-8"},  // a surrogate
      {"ab\xE2\x82", kQuestion, "UTF-8"},    // cut short
      {"text", "", "question is empty"},
      {"text", " \n ", "question is empty"},
  };
  for (const Case& c : cases) {
    absl::Status s = run(c.doc, c.question, ok);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expect;
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << s;
  }
  absl::Status big = run("eleven byte", kQuestion, small_max);
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.message().find("limit is 10"), std::string::npos) << big;

  MapReduceOptions unknown = ok;
  unknown.task = "poetry";
  absl::Status task = run("text", kQuestion, unknown);
  EXPECT_EQ(task.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(task.message().find("qa, retrieval"), std::string::npos);

  absl::Status tiny = run("text", kQuestion, Options(300));
  EXPECT_EQ(tiny.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tiny.message().find("too small"), std::string::npos) << tiny;

  for (auto bad : std::vector<std::function<void(MapReduceOptions&)>>{
           [](MapReduceOptions& o) { o.max_parallel = 0; },
           [](MapReduceOptions& o) { o.max_tokens = 0; },
           [](MapReduceOptions& o) { o.max_tokens = o.context_window; },
           [](MapReduceOptions& o) { o.max_collapse_rounds = -1; },
           [](MapReduceOptions& o) { o.temperature = -1; }}) {
    MapReduceOptions o = ok;
    bad(o);
    EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(run("text", kQuestion, o).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(gen.calls.empty());
}

TEST(MapReduceTest, FindsTheKeyWithOrderedProgress) {
  FakeGenerator gen(100000, PasskeyScript);
  const std::string doc = Haystack(60, 41);
  std::vector<ProgressEvent> events;
  auto r = RunMapReduce(gen, doc, kQuestion, Options(1000),
                        [&](const ProgressEvent& e) { events.push_back(e); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer, "71432");
  EXPECT_EQ(r->rationale, "a part states it.");
  EXPECT_DOUBLE_EQ(r->confidence, 5.0);
  EXPECT_EQ(r->collapse_rounds, 0);
  const int n = r->num_chunks;
  ASSERT_GE(n, 4);
  ASSERT_EQ(static_cast<int>(r->chunks.size()), n);
  int found = 0;
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(r->chunks[i].index, i);
    EXPECT_TRUE(r->chunks[i].parsed);
    found += !r->chunks[i].no_information;
  }
  EXPECT_EQ(found, 1);
  EXPECT_GT(gen.max_in_flight, 1);
  EXPECT_GT(r->prompt_tokens, 0);
  EXPECT_GT(r->cached_prompt_tokens, 0);
  EXPECT_LT(r->cached_prompt_tokens, r->prompt_tokens);
  EXPECT_GT(r->completion_tokens, 0);

  // The first map call ran alone, so that a prefix cache holds the prompt's shared head before
  // the other calls read it; the rest ran together.
  const auto maps = gen.Calls(Stage::kMap);
  ASSERT_EQ(static_cast<int>(maps.size()), n);
  for (size_t i = 1; i < maps.size(); ++i) EXPECT_LT(maps[0].ended, maps[i].started) << i;

  // split, map x n (done 1..n), reduce start and end.
  ASSERT_EQ(static_cast<int>(events.size()), 1 + n + 2);
  EXPECT_EQ(events[0].stage, "split");
  EXPECT_EQ(events[0].total, n);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(events[1 + i].stage, "map");
    EXPECT_EQ(events[1 + i].done, i + 1);
    EXPECT_EQ(events[1 + i].total, n);
    EXPECT_TRUE(events[1 + i].result.has_value());
  }
  EXPECT_EQ(events[n + 1].stage, "reduce");
  EXPECT_EQ(events[n + 1].done, 0);
  EXPECT_EQ(events[n + 2].done, 1);

  // Every call carried its grammar; the reduce read only the one result with information.
  for (const auto& c : gen.Calls(Stage::kMap)) {
    EXPECT_NE(c.grammar.find("Confidence Score"), std::string::npos);
  }
  const auto reduce = gen.Calls(Stage::kReduce);
  ASSERT_EQ(reduce.size(), 1u);
  EXPECT_NE(reduce[0].grammar.find("Answer"), std::string::npos);
  EXPECT_NE(reduce[0].prompt.find("Part 1:"), std::string::npos);
  EXPECT_EQ(reduce[0].prompt.find("Part 2:"), std::string::npos);
  EXPECT_EQ(reduce[0].prompt.find("[NO INFORMATION]\nConfidence"), std::string::npos);
}

TEST(MapReduceTest, ContextWindowIsCappedByTheGenerator) {
  FakeGenerator gen(1000, PasskeyScript);
  MapReduceOptions o = Options(100000);
  auto r = RunMapReduce(gen, Haystack(60, 10), kQuestion, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();  // the fake rejects any call over its 1000 tokens
  EXPECT_EQ(r->answer, "71432");
  o.use_grammar = false;
  gen.calls.clear();
  ASSERT_TRUE(RunMapReduce(gen, Haystack(10, 3), kQuestion, o, nullptr).ok());
  for (const auto& c : gen.calls) EXPECT_TRUE(c.grammar.empty());
}

// Every map result has information and is long, so the results need collapsing.
absl::StatusOr<std::string> VerboseScript(int map_words, int collapse_words, Stage stage,
                                          const std::string& prompt) {
  switch (stage) {
    case Stage::kMap:
      return Structured(Repeat("fact", map_words), "partial", 3.0);
    case Stage::kCollapse:
      return Structured(Repeat("merged", collapse_words), "combined", 4.0);
    case Stage::kReduce:
      return std::string("Rationale: merged notes.\nAnswer: final");
  }
  return absl::InternalError("unreachable");
}

TEST(MapReduceTest, CollapsesWhenResultsDoNotFit) {
  FakeGenerator gen(100000, [](Stage s, const std::string& p, const GenerateCall&) {
    return VerboseScript(200, 5, s, p);  // about a third of the budget each
  });
  std::vector<ProgressEvent> events;
  auto r = RunMapReduce(gen, Haystack(60, 41), kQuestion, Options(1000),
                        [&](const ProgressEvent& e) { events.push_back(e); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer, "final");
  EXPECT_EQ(r->collapse_rounds, 1);
  EXPECT_DOUBLE_EQ(r->confidence, 4.0);  // the collapsed results are what the reduce read
  const auto collapse = gen.Calls(Stage::kCollapse);
  ASSERT_GE(collapse.size(), 2u);
  EXPECT_LT(static_cast<int>(collapse.size()), r->num_chunks);
  // Stages in order: split, map..., collapse..., reduce, reduce.
  std::vector<std::string> order;
  for (const ProgressEvent& e : events) {
    if (order.empty() || order.back() != e.stage) order.push_back(e.stage);
    if (e.stage == "collapse") {
      EXPECT_EQ(e.round, 1);
      EXPECT_EQ(e.total, static_cast<int>(collapse.size()));
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"split", "map", "collapse", "reduce"}));
  const auto reduce = gen.Calls(Stage::kReduce);
  ASSERT_EQ(reduce.size(), 1u);
  EXPECT_NE(reduce[0].prompt.find("merged merged"), std::string::npos);
  EXPECT_EQ(reduce[0].prompt.find("fact fact"), std::string::npos);
}

TEST(MapReduceTest, CollapseIsBounded) {
  FakeGenerator gen(100000, [](Stage s, const std::string& p, const GenerateCall&) {
    return VerboseScript(80, 400, s, p);  // collapsing makes the results longer
  });
  MapReduceOptions o = Options(1000);
  o.max_collapse_rounds = 1;
  auto r = RunMapReduce(gen, Haystack(120, 41), kQuestion, o, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("after 1 collapse rounds"), std::string::npos) << r.status();
  EXPECT_TRUE(gen.Calls(Stage::kReduce).empty());

  o.max_collapse_rounds = 0;
  r = RunMapReduce(gen, Haystack(120, 41), kQuestion, o, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(MapReduceTest, ResultTooLargeToCollapseIsAnError) {
  FakeGenerator gen(100000, [](Stage s, const std::string& p, const GenerateCall&) {
    return VerboseScript(900, 5, s, p);
  });
  auto r = RunMapReduce(gen, Haystack(60, 41), kQuestion, Options(1000), nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("one result must fit"), std::string::npos) << r.status();
}

// The map copies the needle sentence as its evidence but invents its Answer (as SmolLM2 did on a
// 128K pass key); the other chunks invent evidence too.
absl::StatusOr<std::string> InventedAnswerScript(Stage stage, const std::string& prompt,
                                                 const GenerateCall&) {
  switch (stage) {
    case Stage::kMap:
      if (ChunkOf(prompt).find("71432") != std::string::npos) {
        return Structured("The pass key is 71432.", "a key that opens the doors", 3.0);
      }
      return Structured("The pass key is purple.", "purple", 3.0);
    case Stage::kCollapse:
      return Structured("merged", "?", 1.0);
    case Stage::kReduce:
      return std::string("Answer: 71432\nRationale: a part states it.");
  }
  return absl::InternalError("unreachable");
}

TEST(MapReduceTest, GroundedRetrievalNotesPassOnTheirEvidenceForAnInventedAnswer) {
  for (const char* evidence : {"grounded", "answered"}) {
    SCOPED_TRACE(evidence);
    FakeGenerator gen(100000, InventedAnswerScript);
    MapReduceOptions o = Options(1000);
    o.evidence = evidence;
    auto r = RunMapReduce(gen, Haystack(60, 41), kQuestion, o, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    // The map results themselves are reported as the model wrote them.
    int grounded = 0;
    for (const ChunkResult& c : r->chunks) {
      grounded += c.grounded;
      EXPECT_FALSE(c.answer_literal);
      if (c.grounded) EXPECT_EQ(c.answer, "a key that opens the doors");
    }
    EXPECT_EQ(grounded, 1);
    const auto reduce = gen.Calls(Stage::kReduce);
    ASSERT_EQ(reduce.size(), 1u);
    const std::string& prompt = reduce[0].prompt;
    if (std::string(evidence) == "grounded") {
      // Only the grounded note, with its copied sentence standing in for the invented answer.
      EXPECT_NE(prompt.find("Answer: The pass key is 71432."), std::string::npos) << prompt;
      EXPECT_EQ(prompt.find("opens the doors"), std::string::npos);
      EXPECT_EQ(prompt.find("Part 2:"), std::string::npos);
    } else {
      EXPECT_NE(prompt.find("Answer: a key that opens the doors"), std::string::npos);
    }
  }
}

// Two chunks' notes are grounded: the needle's, scored low, and a copied sentence that holds only
// "key" of the question, scored high (as on a 128K pass key, where SmolLM2 reduced to it).
absl::StatusOr<std::string> TwoGroundedScript(Stage stage, const std::string& prompt,
                                              const GenerateCall&) {
  switch (stage) {
    case Stage::kMap:
      if (ChunkOf(prompt).find("71432") != std::string::npos) {
        return Structured("The pass key is 71432.", "71432", 1.0);
      }
      if (ChunkOf(prompt).find("mystery") != std::string::npos) {
        return Structured("The key to this mystery is 100 of us.", "100", 3.0);
      }
      return Structured("nothing", kNoInformation, 0.0);
    case Stage::kCollapse:
      return Structured("merged", "?", 1.0);
    case Stage::kReduce:
      return std::string("Answer: 100\nRationale: the best scored part.");
  }
  return absl::InternalError("unreachable");
}

TEST(MapReduceTest, GroundedRetrievalNotesHoldingLessOfTheQuestionAreSetAside) {
  const std::string doc = "The key to this mystery is 100 of us.\n" + Haystack(60, 41);
  for (const char* task : {"retrieval", "qa"}) {
    SCOPED_TRACE(task);
    FakeGenerator gen(100000, TwoGroundedScript);
    MapReduceOptions o = Options(1000);
    o.evidence = "grounded";
    o.task = task;
    auto r = RunMapReduce(gen, doc, kQuestion, o, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    int grounded = 0;
    for (const ChunkResult& c : r->chunks) grounded += c.grounded;
    EXPECT_EQ(grounded, 2);
    const auto reduce = gen.Calls(Stage::kReduce);
    ASSERT_EQ(reduce.size(), 1u);
    const std::string& prompt = reduce[0].prompt;
    EXPECT_NE(prompt.find("The pass key is 71432."), std::string::npos) << prompt;
    if (std::string(task) == "retrieval") {
      EXPECT_EQ(prompt.find("mystery"), std::string::npos) << prompt;
    } else {  // other tasks keep every grounded note
      EXPECT_NE(prompt.find("mystery"), std::string::npos) << prompt;
    }
  }
}

TEST(MapReduceTest, NothingFoundReachesTheReduceExplicitly) {
  FakeGenerator gen(100000, PasskeyScript);
  auto r = RunMapReduce(gen, Haystack(30, -1), kQuestion, Options(1000), nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->answer, "unknown");
  EXPECT_DOUBLE_EQ(r->confidence, 0);
  const auto reduce = gen.Calls(Stage::kReduce);
  ASSERT_EQ(reduce.size(), 1u);
  EXPECT_NE(reduce[0].prompt.find("No part of the document held information"), std::string::npos);
  for (const ChunkResult& c : r->chunks) EXPECT_TRUE(c.no_information);
}

TEST(MapReduceTest, QuestionAboutTheMarkerKeepsNoInformationResults) {
  FakeGenerator gen(100000, PasskeyScript);
  auto r = RunMapReduce(gen, Haystack(30, -1), "Which parts answer [NO INFORMATION]?",
                        Options(1500), nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto reduce = gen.Calls(Stage::kReduce);
  ASSERT_EQ(reduce.size(), 1u);
  EXPECT_NE(reduce[0].prompt.find(absl::StrCat("Part ", r->num_chunks, ":")), std::string::npos);
}

TEST(MapReduceTest, GeneratorErrorsStopTheRun) {
  FakeGenerator gen(100000, [](Stage s, const std::string& p, const GenerateCall& c) {
    if (s == Stage::kMap && p.find("blue number 3 0") != std::string::npos) {
      return absl::StatusOr<std::string>(absl::UnavailableError("the server went away"));
    }
    return PasskeyScript(s, p, c);
  });
  auto r = RunMapReduce(gen, Haystack(60, 41), kQuestion, Options(1000), nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(gen.Calls(Stage::kReduce).empty());
}

TEST(MapReduceTest, CancelStopsPromptly) {
  // Map calls hang until cancelled, as a slow model would.
  FakeGenerator gen(100000, [](Stage, const std::string&, const GenerateCall& c) {
    while (!c.is_cancelled()) std::this_thread::sleep_for(milliseconds(5));
    return absl::StatusOr<std::string>(absl::CancelledError("cancelled"));
  });
  std::atomic<bool> cancelled{false};
  MapReduceOptions o = Options(1000);
  o.max_parallel = 3;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(100));
    cancelled.store(true);
  });
  const auto start = std::chrono::steady_clock::now();
  auto r = RunMapReduce(gen, Haystack(60, 41), kQuestion, o, nullptr, &cancelled);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  canceller.join();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_LT(seconds, 2.0);
  EXPECT_LE(gen.calls.size(), 3u);  // no call issued after the cancel
  EXPECT_EQ(RunMapReduce(gen, "text", kQuestion, o, nullptr, &cancelled).status().code(),
            absl::StatusCode::kCancelled);
}

TEST(MapReduceTest, ValidateDocument) {
  EXPECT_TRUE(ValidateDocument("caf\xC3\xA9 \xF0\x9F\x98\x80", 100).ok());
  EXPECT_FALSE(ValidateDocument("\xF4\x90\x80\x80", 100).ok());  // above U+10FFFF
}

}  // namespace
}  // namespace loom::pipelines::mapreduce
