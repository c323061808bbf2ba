#include "pipelines/mapreduce/mapreduce.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "pipelines/mapreduce/prompts.h"
#include "pipelines/mapreduce/split.h"

namespace loom::pipelines::mapreduce {
namespace {

// Tokens kept free in every prompt: pieces counted apart may merge or split differently once
// joined into the template.
constexpr int kMarginTokens = 8;
// The smallest chunk worth a map call.
constexpr int kMinChunkTokens = 32;
// What the reduce call reads when every result was dropped.
constexpr char kNothingFound[] =
    "No part of the document held information relevant to the question: every part answered "
    "[NO INFORMATION].";

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
  });
}

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or npos.
size_t InvalidUtf8At(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    int len = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (int k = 1; k < len; ++k) {
      const uint8_t d = static_cast<uint8_t>(s[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

absl::Status CheckText(std::string_view s, std::string_view what) {
  if (s.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", std::string(what), " holds NUL bytes: binary data is not accepted, only text"));
  }
  if (const size_t at = InvalidUtf8At(s); at != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", std::string(what), " is not valid UTF-8 (at byte ", at, ")"));
  }
  if (IsBlank(s)) {
    return absl::InvalidArgumentError(absl::StrCat("the ", std::string(what), " is empty"));
  }
  return absl::OkStatus();
}

class Runner {
 public:
  Runner(Generator& gen, std::string_view question, const MapReduceOptions& opts,
         const std::function<void(const ProgressEvent&)>& on_progress,
         const std::atomic<bool>* cancelled)
      : gen_(gen),
        question_(question),
        opts_(opts),
        on_progress_(on_progress),
        cancelled_(cancelled),
        keep_no_information_(IsNoInformation(question)) {}

  absl::StatusOr<MapReduceResult> Run(std::string_view document);

 private:
  bool Stopping() const { return aborted_.load() || (cancelled_ && cancelled_->load()); }
  bool ExternallyCancelled() const { return cancelled_ && cancelled_->load(); }

  // Runs fn(0..n-1) on up to max_parallel threads. The first error stops the others (running
  // calls see Stopping()); an external cancel gives Cancelled. With `first_alone`, fn(0) runs
  // before the others start: the calls of a stage share their prompt's head (instructions and
  // calibration example), and once the first call has read it the engine's prefix cache serves
  // it to the rest instead of every call prefilling it again.
  absl::Status Parallel(int n, const std::function<absl::Status(int)>& fn,
                        bool first_alone = false);
  absl::StatusOr<std::vector<int>> Count(const std::vector<std::string_view>& texts);
  // Prompt tokens of `tmpl` with an empty context.
  absl::StatusOr<int> Overhead(const std::string& tmpl);
  absl::StatusOr<GenerateResult> Call(std::string prompt, const std::string& grammar,
                                      uint64_t seed);
  // What a call that read `source` may copy (MapReduceOptions::values): its codes; for
  // "sentence", also the sentences of `evidence` and the answers of `notes` (collapse, reduce).
  CopySource CopyFrom(std::string_view source, std::string_view evidence,
                      const std::vector<ChunkResult>* notes) const;
  // The map/collapse grammar for such a call.
  std::string MapGrammar(std::string_view source, std::string_view evidence,
                         const std::vector<ChunkResult>* notes) const;
  // The notes' text fields, one per line (not their "Part N" headers or scores, whose digits
  // are not values).
  static std::string NotesText(const std::vector<ChunkResult>& notes);
  // Their Extracted Information fields, one per line.
  static std::string ExtractedText(const std::vector<ChunkResult>& notes);
  void Emit(ProgressEvent ev);
  // Drops no-information results (unless the question asks for that marker).
  std::vector<ChunkResult> Evidence(const std::vector<ChunkResult>& results) const;
  absl::Status Collapse(std::vector<ChunkResult>* evidence, int budget, int* rounds);

  Generator& gen_;
  const std::string_view question_;
  const MapReduceOptions& opts_;
  const std::function<void(const ProgressEvent&)>& on_progress_;
  const std::atomic<bool>* cancelled_;
  const bool keep_no_information_;
  PromptSet prompts_;
  GrammarLimits limits_;
  enum class Copy { kNone, kDigits, kSentence };
  Copy copy_ = Copy::kNone;         // MapReduceOptions::values resolved
  std::string structured_grammar_;  // without copied values
  std::string reduce_grammar_;

  std::atomic<bool> aborted_{false};
  std::atomic<int64_t> prompt_tokens_{0};
  std::atomic<int64_t> cached_prompt_tokens_{0};
  std::atomic<int64_t> completion_tokens_{0};
  std::mutex progress_mu_;
};

absl::Status Runner::Parallel(int n, const std::function<absl::Status(int)>& fn, bool first_alone) {
  std::atomic<int> next{0};
  std::mutex mu;
  absl::Status first_error;
  auto run = [&](int i) {
    absl::Status st = fn(i);
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first_error.ok()) first_error = std::move(st);
      aborted_.store(true);
    }
  };
  auto work = [&] {
    while (!Stopping()) {
      const int i = next.fetch_add(1);
      if (i >= n) break;
      run(i);
    }
  };
  if (first_alone && n > 1 && !Stopping()) run(next++);
  const int threads = std::min(n - next.load(), opts_.max_parallel);
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    for (std::thread& t : pool) t.join();
  }
  if (ExternallyCancelled()) return absl::CancelledError("the map-reduce run was cancelled");
  return first_error;
}

absl::StatusOr<std::vector<int>> Runner::Count(const std::vector<std::string_view>& texts) {
  std::vector<int> out(texts.size());
  LOOM_RETURN_IF_ERROR(Parallel(static_cast<int>(texts.size()), [&](int i) -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(out[i], gen_.CountTokens(texts[i]));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int> Runner::Overhead(const std::string& tmpl) {
  return gen_.CountPromptTokens({{"user", FillTemplate(tmpl, "", question_)}});
}

absl::StatusOr<GenerateResult> Runner::Call(std::string prompt, const std::string& grammar,
                                            uint64_t seed) {
  GenerateCall call;
  call.messages = {{"user", std::move(prompt)}};
  call.max_tokens = opts_.max_tokens;
  call.temperature = opts_.temperature;
  call.seed = seed;
  if (opts_.use_grammar) call.grammar = grammar;
  call.is_cancelled = [this] { return Stopping(); };
  LOOM_ASSIGN_OR_RETURN(GenerateResult r, gen_.Generate(call));
  prompt_tokens_.fetch_add(r.prompt_tokens);
  cached_prompt_tokens_.fetch_add(r.cached_prompt_tokens);
  completion_tokens_.fetch_add(r.completion_tokens);
  return r;
}

std::string Runner::MapGrammar(std::string_view source, std::string_view evidence,
                               const std::vector<ChunkResult>* notes) const {
  if (copy_ == Copy::kNone) return structured_grammar_;
  const CopySource copy = CopyFrom(source, evidence, notes);
  return StructuredGrammar(limits_, &copy);
}

CopySource Runner::CopyFrom(std::string_view source, std::string_view evidence,
                            const std::vector<ChunkResult>* notes) const {
  CopySource copy;
  copy.codes = Codes(source);
  if (copy_ != Copy::kSentence) return copy;
  copy.sentences = Sentences(evidence, limits_.extracted_chars);
  if (notes != nullptr) {
    for (const ChunkResult& r : *notes) {
      // One line: not the raw text of an output that did not parse at all. (A note cut off at
      // max_tokens before its score, as key-value notes full of UUIDs are, keeps its fields.)
      if (!r.answer.empty() && !r.no_information && r.answer.find('\n') == std::string::npos &&
          std::find(copy.answers.begin(), copy.answers.end(), r.answer) == copy.answers.end()) {
        copy.answers.push_back(r.answer);
      }
    }
  }
  return copy;
}

std::string Runner::NotesText(const std::vector<ChunkResult>& notes) {
  std::string out;
  for (const ChunkResult& r : notes)
    absl::StrAppend(&out, r.extracted, "\n", r.rationale, "\n", r.answer, "\n");
  return out;
}

std::string Runner::ExtractedText(const std::vector<ChunkResult>& notes) {
  std::string out;
  for (const ChunkResult& r : notes) {
    if (!r.no_information) absl::StrAppend(&out, r.extracted, "\n");
  }
  return out;
}

void Runner::Emit(ProgressEvent ev) {
  if (on_progress_) on_progress_(ev);
}

std::vector<ChunkResult> Runner::Evidence(const std::vector<ChunkResult>& results) const {
  std::vector<ChunkResult> out;
  for (const ChunkResult& r : results) {
    if (!r.no_information || keep_no_information_) out.push_back(r);
  }
  if (opts_.evidence == "grounded" &&
      std::any_of(out.begin(), out.end(), [](const ChunkResult& r) { return r.grounded; })) {
    std::erase_if(out, [](const ChunkResult& r) { return !r.grounded; });
    // A retrieved value is a copy of the document's text. A grounded note whose Answer is not
    // (SmolLM2 wrote "The pass key is 36709." as its evidence and then an invented Answer) goes
    // on with its evidence as its Answer, which the reduce copies (docs/mapreduce.md).
    // Nor is a value an Answer that only repeats the question (SmolLM2 answered with the key
    // of a key-value pair whose line it had copied): that note goes on with what its evidence
    // says beyond the question ("\"<key>\": \"<value>\"," -> "<value>").
    if (opts_.task == "retrieval") {
      // A retrieval question names what it asks for, and the sentence that holds the value says
      // it again ("The pass key is 10297." holds "pass" and "key"; a copied "The key to this
      // mystery is ..." only "key", and SmolLM2 reduced to it): only the grounded notes whose
      // copied sentence holds the most question words go on (ties all go on).
      int most = 0;
      for (const ChunkResult& r : out) most = std::max(most, r.question_words);
      std::erase_if(out, [most](const ChunkResult& r) { return r.question_words < most; });
      for (ChunkResult& r : out) {
        if (!r.answer_literal) {
          r.answer = r.extracted;
        } else if (RepeatsQuestion(r.answer, question_)) {
          std::string value = NewInformation(r.extracted, question_);
          r.answer = value.empty() ? r.extracted : std::move(value);
        }
      }
    }
  }
  return out;
}

absl::Status Runner::Collapse(std::vector<ChunkResult>* evidence, int budget, int* rounds) {
  while (!evidence->empty()) {
    std::vector<std::string> items;
    for (size_t i = 0; i < evidence->size(); ++i) {
      items.push_back(FormatEvidenceItem((*evidence)[i], static_cast<int>(i)));
    }
    std::vector<std::string_view> views(items.begin(), items.end());
    LOOM_ASSIGN_OR_RETURN(std::vector<int> counts, Count(views));
    int64_t total = 0;
    for (int c : counts) total += c;
    if (total <= budget) {
      LOOM_ASSIGN_OR_RETURN(int whole, gen_.CountTokens(FormatEvidence(*evidence)));
      if (whole <= budget) return absl::OkStatus();
      total = whole;
    }
    if (*rounds >= opts_.max_collapse_rounds) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the results still take ", total, " tokens after ", *rounds,
          " collapse rounds, over the budget of ", budget,
          " tokens; raise max_collapse_rounds or context_window, or lower max_tokens"));
    }
    absl::StatusOr<std::vector<std::vector<int>>> groups = PackConsecutive(counts, budget, 0);
    if (!groups.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot collapse: ", groups.status().message(),
          " (one result must fit the collapse prompt; raise context_window or lower max_tokens)"));
    }
    if (groups->size() == evidence->size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot collapse: the budget of ", budget, " tokens holds only one result per group, so ",
          evidence->size(), " results cannot be merged; raise context_window or lower max_tokens"));
    }
    const int round = ++*rounds;
    const int n = static_cast<int>(groups->size());
    std::vector<ChunkResult> merged(n);
    int done = 0;
    LOOM_RETURN_IF_ERROR(Parallel(
        n,
        [&](int g) -> absl::Status {
          std::vector<ChunkResult> group;
          for (int i : (*groups)[g]) group.push_back((*evidence)[i]);
          SortForReading(&group);  // groups are consecutive chunks; within one, best evidence first
          const std::string notes = FormatEvidence(group);
          const uint64_t seed = (static_cast<uint64_t>(round) << 32) | static_cast<uint64_t>(g);
          LOOM_ASSIGN_OR_RETURN(
              GenerateResult out,
              Call(FillTemplate(prompts_.collapse, notes, question_),
                   MapGrammar(NotesText(group), ExtractedText(group), &group), seed));
          merged[g] = ParseChunkResult(out.text, g);
          MarkGrounded(&merged[g], notes, question_);
          merged[g].answer_literal = AnswerIsLiteral(merged[g], notes);
          std::lock_guard<std::mutex> lock(progress_mu_);
          Emit({"collapse", ++done, n, round, merged[g]});
          return absl::OkStatus();
        },
        /*first_alone=*/true));
    *evidence = Evidence(merged);
  }
  return absl::OkStatus();
}

absl::StatusOr<MapReduceResult> Runner::Run(std::string_view document) {
  const auto start = std::chrono::steady_clock::now();
  LOOM_ASSIGN_OR_RETURN(prompts_, LoadPrompts(opts_.prompts_dir, opts_.task));
  limits_ = LimitsForMaxTokens(opts_.max_tokens);
  if (opts_.use_grammar) {
    if (opts_.values == "digits") copy_ = Copy::kDigits;
    if (opts_.values == "sentence" || (opts_.values == "auto" && opts_.task == "retrieval")) {
      copy_ = Copy::kSentence;
    }
  }
  structured_grammar_ = StructuredGrammar(limits_);
  reduce_grammar_ = ReduceGrammar(limits_, ReduceAnswerFirst(opts_.task));

  // Budgets: L minus the template (with the question) and the completion.
  const int window = std::min(opts_.context_window, gen_.context_length());
  LOOM_ASSIGN_OR_RETURN(int map_overhead, Overhead(prompts_.map));
  LOOM_ASSIGN_OR_RETURN(int collapse_overhead, Overhead(prompts_.collapse));
  LOOM_ASSIGN_OR_RETURN(int reduce_overhead, Overhead(prompts_.reduce));
  const int chunk_budget = window - map_overhead - opts_.max_tokens - kMarginTokens;
  if (chunk_budget < kMinChunkTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("the context window of ", window,
                     " tokens is too small: the map prompt with the question "
                     "takes ",
                     map_overhead, " tokens and max_tokens is ", opts_.max_tokens, ", leaving ",
                     std::max(chunk_budget, 0), " tokens for the document (at least ",
                     kMinChunkTokens, " needed); raise context_window or lower max_tokens"));
  }
  const int evidence_budget =
      window - std::max(collapse_overhead, reduce_overhead) - opts_.max_tokens - kMarginTokens;
  if (evidence_budget < kMinChunkTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("the context window of ", window,
                     " tokens is too small: the collapse and reduce prompts "
                     "with the question take ",
                     std::max(collapse_overhead, reduce_overhead), " tokens and max_tokens is ",
                     opts_.max_tokens, "; raise context_window or lower max_tokens"));
  }

  // Split.
  LOOM_ASSIGN_OR_RETURN(
      std::vector<Chunk> chunks,
      SplitDocument(document, chunk_budget,
                    [this](const std::vector<std::string_view>& t) { return Count(t); }));
  const int n = static_cast<int>(chunks.size());
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    Emit({"split", n, n, 0, std::nullopt});
  }

  // Map.
  MapReduceResult result;
  result.num_chunks = n;
  result.chunks.resize(n);
  int done = 0;
  LOOM_RETURN_IF_ERROR(Parallel(
      n,
      [&](int i) -> absl::Status {
        LOOM_ASSIGN_OR_RETURN(
            GenerateResult out,
            Call(FillTemplate(prompts_.map, chunks[i].text, question_),
                 MapGrammar(chunks[i].text, chunks[i].text, nullptr), static_cast<uint64_t>(i)));
        ChunkResult r = ParseChunkResult(out.text, i);
        CapUnlessLiteral(&r, chunks[i].text, TaskScoreCap(opts_.task));
        MarkGrounded(&r, chunks[i].text, question_);
        r.answer_literal = AnswerIsLiteral(r, chunks[i].text);
        std::lock_guard<std::mutex> lock(progress_mu_);
        result.chunks[i] = r;
        Emit({"map", ++done, n, 0, std::move(r)});
        return absl::OkStatus();
      },
      /*first_alone=*/true));

  // Collapse.
  std::vector<ChunkResult> evidence = Evidence(result.chunks);
  LOOM_RETURN_IF_ERROR(Collapse(&evidence, evidence_budget, &result.collapse_rounds));
  if (ExternallyCancelled()) return absl::CancelledError("the map-reduce run was cancelled");

  // Reduce.
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    Emit({"reduce", 0, 1, 0, std::nullopt});
  }
  // The reduce call reads the evidence best first: grounded, then by score (stable: ties keep
  // document order). The paper keeps chunk order and asks the model to prefer 5-point items; a
  // 135M model copies the first item it reads instead, and its scores say little, so a note whose
  // evidence is copied from the document goes first (docs/mapreduce.md, "Differences").
  SortForReading(&evidence);
  const std::string context = evidence.empty() ? kNothingFound : FormatEvidence(evidence);
  std::string reduce_grammar = reduce_grammar_;
  if (copy_ != Copy::kNone) {
    const CopySource copy = CopyFrom(NotesText(evidence), "", &evidence);
    reduce_grammar = ReduceGrammar(limits_, ReduceAnswerFirst(opts_.task), &copy);
  }
  absl::StatusOr<GenerateResult> out =
      Call(FillTemplate(prompts_.reduce, context, question_), reduce_grammar, ~uint64_t{0});
  if (ExternallyCancelled()) return absl::CancelledError("the map-reduce run was cancelled");
  if (!out.ok()) return out.status();
  ReduceOutput reduced = ParseReduceOutput(out->text);
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    Emit({"reduce", 1, 1, 0, std::nullopt});
  }
  result.rationale = std::move(reduced.rationale);
  result.answer = std::move(reduced.answer);
  for (const ChunkResult& r : evidence)
    result.confidence = std::max(result.confidence, r.confidence);
  result.prompt_tokens = prompt_tokens_.load();
  result.cached_prompt_tokens = cached_prompt_tokens_.load();
  result.completion_tokens = completion_tokens_.load();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace

absl::Status MapReduceOptions::Validate() const {
  auto bad = [](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("map-reduce option ", std::string(what)));
  };
  if (context_window < 64) return bad("context_window must be at least 64");
  if (max_tokens < 1 || max_tokens >= context_window) {
    return bad("max_tokens must be at least 1 and below context_window");
  }
  if (max_collapse_rounds < 0) return bad("max_collapse_rounds must be at least 0");
  if (max_parallel < 1 || max_parallel > 1024) return bad("max_parallel must be in [1, 1024]");
  if (!(temperature >= 0 && temperature <= 2)) return bad("temperature must be in [0, 2]");
  if (max_document_bytes < 1) return bad("max_document_bytes must be at least 1");
  if (prompts_dir.empty()) return bad("prompts_dir must not be empty");
  if (evidence != "answered" && evidence != "grounded") {
    return bad(
        absl::StrCat("evidence must be \"answered\" or \"grounded\", not \"", evidence, "\""));
  }
  if (values != "auto" && values != "digits" && values != "sentence" && values != "free") {
    return bad(absl::StrCat("values must be \"auto\", \"free\", \"digits\" or \"sentence\", not \"",
                            values, "\""));
  }
  return absl::OkStatus();
}

absl::Status ValidateDocument(std::string_view document, int64_t max_bytes) {
  if (static_cast<int64_t>(document.size()) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the document has ", document.size(), " bytes; the limit is ", max_bytes));
  }
  return CheckText(document, "document");
}

absl::StatusOr<MapReduceResult> RunMapReduce(
    Generator& gen, std::string_view document, std::string_view question,
    const MapReduceOptions& opts, const std::function<void(const ProgressEvent&)>& on_progress,
    const std::atomic<bool>* cancelled) {
  LOOM_RETURN_IF_ERROR(opts.Validate());
  LOOM_RETURN_IF_ERROR(ValidateDocument(document, opts.max_document_bytes));
  LOOM_RETURN_IF_ERROR(CheckText(question, "question"));
  if (cancelled && cancelled->load()) {
    return absl::CancelledError("the map-reduce run was cancelled");
  }
  Runner runner(gen, question, opts, on_progress, cancelled);
  return runner.Run(document);
}

}  // namespace loom::pipelines::mapreduce
