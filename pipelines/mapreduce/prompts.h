// The prompt templates of the LLM×MapReduce pipeline, one set per task type, read from files:
//
//   <dir>/calibration.txt           the graded confidence example every prompt shows
//   <dir>/<task>/scoring.txt        the task's own scoring rules (when a 5.0 is allowed)
//   <dir>/<task>/map.txt            one chunk -> structured information
//   <dir>/<task>/collapse.txt       a group of results -> one structured result
//   <dir>/<task>/reduce.txt         all results -> Rationale and Answer
//
// Templates use {context} and {question}, and {calibration}, which LoadPrompts replaces by the
// example followed by the task's rules (so the same example reaches the map, collapse and reduce
// calls). Other braces are left alone.
//
//   LOOM_ASSIGN_OR_RETURN(PromptSet p, LoadPrompts("config/mapreduce", "retrieval"));
//   std::string prompt = FillTemplate(p.map, chunk_text, question);
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::pipelines::mapreduce {

// The task types that have templates: qa, retrieval, math, code, summary.
const std::vector<std::string>& KnownTasks();

// The highest score a map result may keep when its answer is not word for word in its chunk
// (CapUnlessLiteral): 3.0 for retrieval, 4.5 for the others, as the tasks' scoring.txt say.
double TaskScoreCap(std::string_view task);
// Whether the reduce writes its Answer before its Rationale: for retrieval, whose answer is a
// value copied from a note (a small model copies the Answer line of the note it reads when that is
// what comes next, and drifts into its rationale otherwise); the other tasks reason first.
bool ReduceAnswerFirst(std::string_view task);

struct PromptSet {
  std::string task;
  std::string map;  // {calibration} already filled in; {context} and {question} remain
  std::string collapse;
  std::string reduce;
};

// InvalidArgument naming the known tasks for another task; NotFound naming the file that is
// missing; FailedPrecondition for a template without {context}, {question} or {calibration}.
absl::StatusOr<PromptSet> LoadPrompts(std::string_view dir, std::string_view task);

// Replaces {context} and {question} in one pass (text inside the values is never re-substituted).
std::string FillTemplate(std::string_view tmpl, std::string_view context,
                         std::string_view question);

}  // namespace loom::pipelines::mapreduce
