#include "pipelines/mapreduce/prompts.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace loom::pipelines::mapreduce {
namespace {

constexpr std::string_view kContext = "{context}";
constexpr std::string_view kQuestion = "{question}";
constexpr std::string_view kCalibration = "{calibration}";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the prompt file ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TrimEnd(std::string s) {
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

absl::StatusOr<std::string> LoadTemplate(const std::string& path, std::string_view calibration) {
  LOOM_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  for (std::string_view p : {kContext, kQuestion, kCalibration}) {
    if (text.find(p) == std::string::npos) {
      return absl::FailedPreconditionError(
          absl::StrCat("the prompt file ", path, " has no ", std::string(p), " placeholder"));
    }
  }
  return ReplaceAll(TrimEnd(std::move(text)), kCalibration, calibration);
}

}  // namespace

const std::vector<std::string>& KnownTasks() {
  static const std::vector<std::string> tasks = {"qa", "retrieval", "math", "code", "summary"};
  return tasks;
}

double TaskScoreCap(std::string_view task) { return task == "retrieval" ? 3.0 : 4.5; }

bool ReduceAnswerFirst(std::string_view task) { return task == "retrieval"; }

absl::StatusOr<PromptSet> LoadPrompts(std::string_view dir, std::string_view task) {
  const std::vector<std::string>& known = KnownTasks();
  if (std::find(known.begin(), known.end(), task) == known.end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown task type '", std::string(task),
                                                   "'; known: ", absl::StrJoin(known, ", ")));
  }
  const std::string base(dir);
  const std::string task_dir = absl::StrCat(base, "/", std::string(task));
  LOOM_ASSIGN_OR_RETURN(std::string example, ReadFile(absl::StrCat(base, "/calibration.txt")));
  LOOM_ASSIGN_OR_RETURN(std::string rules, ReadFile(absl::StrCat(task_dir, "/scoring.txt")));
  const std::string calibration =
      absl::StrCat(TrimEnd(std::move(example)), "\n", TrimEnd(std::move(rules)));
  PromptSet p;
  p.task = std::string(task);
  LOOM_ASSIGN_OR_RETURN(p.map, LoadTemplate(absl::StrCat(task_dir, "/map.txt"), calibration));
  LOOM_ASSIGN_OR_RETURN(p.collapse,
                        LoadTemplate(absl::StrCat(task_dir, "/collapse.txt"), calibration));
  LOOM_ASSIGN_OR_RETURN(p.reduce, LoadTemplate(absl::StrCat(task_dir, "/reduce.txt"), calibration));
  return p;
}

std::string FillTemplate(std::string_view tmpl, std::string_view context,
                         std::string_view question) {
  std::string out;
  out.reserve(tmpl.size() + context.size() + question.size());
  size_t pos = 0;
  while (pos < tmpl.size()) {
    const size_t brace = tmpl.find('{', pos);
    if (brace == std::string_view::npos) break;
    out.append(tmpl.substr(pos, brace - pos));
    const std::string_view rest = tmpl.substr(brace);
    if (rest.starts_with(kContext)) {
      out.append(context);
      pos = brace + kContext.size();
    } else if (rest.starts_with(kQuestion)) {
      out.append(question);
      pos = brace + kQuestion.size();
    } else {
      out += '{';
      pos = brace + 1;
    }
  }
  if (pos < tmpl.size()) out.append(tmpl.substr(pos));
  return out;
}

}  // namespace loom::pipelines::mapreduce
