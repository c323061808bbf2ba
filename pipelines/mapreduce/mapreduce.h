// LLM×MapReduce (Zhou et al., arXiv 2410.09342): answers a question about a document longer than
// the model's context. The document is split into chunks that fit (split.h); every chunk is
// mapped, concurrently, to structured information (protocol.h: extracted information, rationale,
// answer, confidence score); results that found nothing are dropped; while the rest do not fit
// one prompt they are collapsed group by group; the reduce call gives the final rationale and
// answer. The prompts come from files per task type (prompts.h); each shows the same graded
// confidence example so that scores from different chunks mean the same thing.
//
//   LOOM_ASSIGN_OR_RETURN(auto gen, EngineGenerator::Create(engine.get()));
//   MapReduceOptions opts;
//   opts.task = "retrieval";
//   LOOM_ASSIGN_OR_RETURN(MapReduceResult r,
//                         RunMapReduce(*gen, document, "What is the pass key?", opts,
//                                      [](const ProgressEvent& e) { Log(e.stage, e.done); }));
//   std::cout << r.answer << " (confidence " << r.confidence << ")\n";
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipelines/mapreduce/generator.h"
#include "pipelines/mapreduce/protocol.h"

namespace loom::pipelines::mapreduce {

struct MapReduceOptions {
  // L: prompt + completion tokens of every call. Capped at the generator's context_length().
  int context_window = 4096;
  int max_tokens = 300;         // per call (map, collapse, reduce)
  int max_collapse_rounds = 5;  // more rounds needed: FailedPrecondition
  int max_parallel = 16;        // concurrent Generate (and token counting) calls
  std::string task = "qa";      // qa, retrieval, math, code, summary
  std::string prompts_dir = "config/mapreduce";
  float temperature = 0;
  int64_t max_document_bytes = 16 << 20;
  // Generate outputs under the protocol's GBNF grammars (protocol.h). Off only for generators
  // that cannot take a grammar; the parsers then read free text as well as they can.
  bool use_grammar = true;
  // Which map results the collapse and reduce read: "answered" (the paper: all but
  // [NO INFORMATION]) or "grounded" (as "answered", but when some results are grounded, i.e.
  // their Extracted Information is copied from their chunk, only those; docs/mapreduce.md).
  std::string evidence = "answered";
  // What the model may write (protocol.h CopySource; docs/mapreduce.md): "free" (the paper);
  // "digits": a digit only inside a run of digits the call read (the chunk for a map call, the
  // notes for a collapse or reduce call), written whole, so a retrieved number cannot lose or
  // gain a digit and none can be invented; "sentence": as "digits", and the Extracted
  // Information is one sentence of what the call read, copied, and collapse and reduce Answers
  // are picked from the notes' Answers. "auto": "sentence" for the retrieval task, else "free"
  // (math and QA answers may compute new numbers). Needs use_grammar.
  std::string values = "auto";

  // InvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

struct ProgressEvent {
  std::string stage;  // "split", "map", "collapse", "reduce"
  int done = 0;
  int total = 0;
  int round = 0;                      // collapse round, from 1
  std::optional<ChunkResult> result;  // the map or collapse result just finished
};

struct MapReduceResult {
  std::string rationale;
  std::string answer;
  // The highest confidence score among the results the reduce call read (0 when none).
  double confidence = 0;
  std::vector<ChunkResult> chunks;  // every map result, in chunk order, dropped ones included
  int collapse_rounds = 0;
  int num_chunks = 0;
  int64_t prompt_tokens = 0;  // over every call
  // Of prompt_tokens, those the generator served from its prefix cache (0 where it does not say).
  int64_t cached_prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double seconds = 0;
};

// Runs the pipeline. `on_progress` (may be empty) is called once after the split (done = total =
// the number of chunks), once per finished map and collapse call (done counts up to total, with
// the result), and at the start (done 0) and end (done 1) of the reduce call. Calls come from
// worker threads but never overlap: they are serialised by a mutex, in order of `done` per stage.
// Setting `*cancelled` stops issuing calls, ends running ones where the generator can, and
// returns Cancelled.
//
// Errors: InvalidArgument for an empty or whitespace-only document or question, a document with
// NUL bytes or invalid UTF-8, a document over max_document_bytes, an unknown task, bad options,
// or a context_window too small for the prompt templates plus max_tokens (not even an empty chunk
// would fit). FailedPrecondition when the results cannot be collapsed to fit the reduce prompt
// (a single result over the budget, groups of one, or more than max_collapse_rounds rounds).
// A generator's error is returned as is.
absl::StatusOr<MapReduceResult> RunMapReduce(
    Generator& gen, std::string_view document, std::string_view question,
    const MapReduceOptions& opts, const std::function<void(const ProgressEvent&)>& on_progress,
    const std::atomic<bool>* cancelled = nullptr);

// Checks a document as RunMapReduce does (size, NUL bytes, UTF-8, not blank).
absl::Status ValidateDocument(std::string_view document, int64_t max_bytes);

}  // namespace loom::pipelines::mapreduce
