// Prompt templates: every task's files load from config/mapreduce with the calibration example in
// all three prompts; unknown tasks, missing files and templates without placeholders are errors;
// FillTemplate substitutes once.
#include "pipelines/mapreduce/prompts.h"

#include <cctype>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace loom::pipelines::mapreduce {
namespace {

constexpr char kDir[] = "config/mapreduce";
constexpr char kExampleLine[] = "Mara keeps bees scores 5.0";

TEST(PromptsTest, EveryTaskLoadsWithTheCalibrationExample) {
  ASSERT_EQ(KnownTasks(), (std::vector<std::string>{"qa", "retrieval", "math", "code", "summary"}));
  for (const std::string& task : KnownTasks()) {
    auto p = LoadPrompts(kDir, task);
    ASSERT_TRUE(p.ok()) << task << ": " << p.status();
    EXPECT_EQ(p->task, task);
    for (const std::string* t : {&p->map, &p->collapse, &p->reduce}) {
      EXPECT_NE(t->find("{context}"), std::string::npos) << task;
      EXPECT_NE(t->find("{question}"), std::string::npos) << task;
      EXPECT_EQ(t->find("{calibration}"), std::string::npos) << task;
      EXPECT_NE(t->find(kExampleLine), std::string::npos) << task;
      EXPECT_NE(t->find("Scoring rules:"), std::string::npos) << task;
    }
    // Each asks for the protocol's fields (as "Field:" lines, or in prose for retrieval).
    auto lower = [](std::string s) {
      for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return s;
    };
    EXPECT_NE(lower(p->map).find("confidence score"), std::string::npos) << task;
    EXPECT_NE(lower(p->collapse).find("confidence score"), std::string::npos) << task;
    EXPECT_NE(lower(p->reduce).find("answer"), std::string::npos) << task;
  }
  auto retrieval = LoadPrompts(kDir, "retrieval");
  ASSERT_TRUE(retrieval.ok());
  EXPECT_NE(retrieval->map.find("verbatim"), std::string::npos);
}

TEST(PromptsTest, UnknownTaskNamesTheKnownOnes) {
  auto p = LoadPrompts(kDir, "poetry");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("poetry"), std::string::npos);
  EXPECT_NE(p.status().message().find("qa, retrieval, math, code, summary"), std::string::npos);
  EXPECT_EQ(LoadPrompts(kDir, "../qa").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PromptsTest, MissingFilesAndPlaceholders) {
  EXPECT_EQ(LoadPrompts("/nonexistent/prompts", "qa").status().code(), absl::StatusCode::kNotFound);
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(testing::TempDir()) / "mr_prompts";
  fs::create_directories(dir / "qa");
  auto write = [](const fs::path& p, const std::string& text) { std::ofstream(p) << text; };
  write(dir / "calibration.txt", "EXAMPLE\n");
  write(dir / "qa" / "scoring.txt", "RULES\n");
  write(dir / "qa" / "map.txt", "M {context} {question} {calibration}\n");
  write(dir / "qa" / "collapse.txt", "C {context} {question} {calibration}");
  write(dir / "qa" / "reduce.txt", "R {context} {calibration}");  // no {question}
  auto p = LoadPrompts(dir.string(), "qa");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(p.status().message().find("reduce.txt"), std::string::npos);
  EXPECT_NE(p.status().message().find("{question}"), std::string::npos);
  write(dir / "qa" / "reduce.txt", "R {context} {question} {calibration}");
  p = LoadPrompts(dir.string(), "qa");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->map, "M {context} {question} EXAMPLE\nRULES");
  fs::remove_all(dir);
}

TEST(PromptsTest, FillTemplateSubstitutesOnce) {
  EXPECT_EQ(FillTemplate("Q: {question}\nC: {context}\n{other} {", "text {question}", "why?"),
            "Q: why?\nC: text {question}\n{other} {");
  EXPECT_EQ(FillTemplate("{context}{context}", "a", ""), "aa");
}

}  // namespace
}  // namespace loom::pipelines::mapreduce
