#include "server/mapreduce_cli.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/model.h"
#include "engine/serving/engine.h"
#include "pipelines/mapreduce/engine_generator.h"
#include "pipelines/mapreduce/mapreduce.h"
#include "pipelines/mapreduce/openai_generator.h"
#include "server/flags.h"

namespace loom::server {

const char kMapReduceUsage[] =
    "  mapreduce LLM×MapReduce question answering over a long document (arXiv 2410.09342)\n"
    "            --doc FILE (- for stdin) --question TEXT [--task qa|retrieval|math|code|summary]\n"
    "            [--context-window N (4096)] [--max-tokens N (300)] [--temperature T (0)]\n"
    "            [--max-collapse-rounds N (5)] [--evidence answered|grounded (answered)]\n"
    "            [--values auto|free|digits|sentence (auto)]\n"
    "            [--max-parallel N (16)] [--model PATH] [--threads N] [--max-num-seqs N (16)]\n"
    "            [--endpoint URL [--api-key KEY] [--served-model NAME]] [--json] [--quiet]\n";

namespace {

namespace mr = loom::pipelines::mapreduce;
using json = nlohmann::ordered_json;

struct Options {
  std::string doc;
  std::string question;
  mr::MapReduceOptions mr;
  std::string model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  int threads = 0;
  int max_num_seqs = 16;
  std::string endpoint;
  std::string api_key;
  std::string served_model;
  bool json_out = false;
  bool quiet = false;
};

absl::StatusOr<Options> Parse(const std::vector<std::string>& args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--json") {
      o.json_out = true;
      continue;
    }
    if (a == "--quiet") {
      o.quiet = true;
      continue;
    }
    if (i + 1 >= args.size()) return absl::InvalidArgumentError(a + " needs a value");
    const std::string& v = args[++i];
    if (a == "--doc") {
      o.doc = v;
    } else if (a == "--question") {
      o.question = v;
    } else if (a == "--task") {
      o.mr.task = v;
    } else if (a == "--context-window" || a == "--chunk-size") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.mr.context_window));
    } else if (a == "--max-tokens") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.mr.max_tokens));
    } else if (a == "--max-collapse-rounds") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.mr.max_collapse_rounds));
    } else if (a == "--temperature") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.mr.temperature));
    } else if (a == "--evidence") {
      o.mr.evidence = v;
    } else if (a == "--values") {
      o.mr.values = v;
    } else if (a == "--max-parallel") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.mr.max_parallel));
    } else if (a == "--model" || a == "-m") {
      o.model = v;
    } else if (a == "--threads" || a == "-t") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.threads));
    } else if (a == "--max-num-seqs") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.max_num_seqs));
    } else if (a == "--endpoint") {
      o.endpoint = v;
    } else if (a == "--api-key") {
      o.api_key = v;
    } else if (a == "--served-model") {
      o.served_model = v;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a));
    }
  }
  if (o.doc.empty()) return absl::InvalidArgumentError("--doc FILE is required");
  if (o.question.empty()) return absl::InvalidArgumentError("--question TEXT is required");
  LOOM_RETURN_IF_ERROR(o.mr.Validate());
  return o;
}

absl::StatusOr<std::string> ReadDocument(const std::string& path) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--doc: cannot read ", path));
    ss << in.rdbuf();
  }
  return ss.str();
}

// A one-line progress bar on stderr: "map      [##########..........]  12/37".
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO)) {}
  ~ProgressBar() { End(); }
  void Update(const mr::ProgressEvent& e) {
    if (!enabled_) return;
    std::string stage = e.stage == "collapse" ? absl::StrCat("collapse ", e.round) : e.stage;
    if (e.stage == "split") {
      End();
      std::fprintf(stderr, "split: %d chunks\n", e.total);
      return;
    }
    const int width = 30;
    const int filled = e.total > 0 ? width * e.done / e.total : 0;
    std::string bar(filled, '#');
    bar.append(width - filled, '.');
    if (tty_) {
      std::fprintf(stderr, "\r%-10s [%s] %4d/%d", stage.c_str(), bar.c_str(), e.done, e.total);
      open_ = true;
      if (e.done == e.total) End();
    } else if (e.done == e.total) {
      std::fprintf(stderr, "%-10s [%s] %4d/%d\n", stage.c_str(), bar.c_str(), e.done, e.total);
    }
    std::fflush(stderr);
  }
  void End() {
    if (open_) std::fputc('\n', stderr);
    open_ = false;
  }

 private:
  const bool enabled_;
  const bool tty_;
  bool open_ = false;
};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "loom mapreduce: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int RunMapReduceCli(const std::vector<std::string>& args) {
  absl::StatusOr<Options> parsed = Parse(args);
  if (!parsed.ok()) return Fail(parsed.status());
  const Options& o = *parsed;
  absl::StatusOr<std::string> doc = ReadDocument(o.doc);
  if (!doc.ok()) return Fail(doc.status());
  if (absl::Status s = mr::ValidateDocument(*doc, o.mr.max_document_bytes); !s.ok()) {
    return Fail(s);
  }

  std::unique_ptr<engine::Engine> eng;
  std::unique_ptr<mr::Generator> gen;
  if (!o.endpoint.empty()) {
    mr::OpenAiGeneratorOptions go;
    go.base_url = o.endpoint;
    go.api_key = o.api_key;
    go.model = o.served_model;
    auto g = mr::OpenAiGenerator::Create(go);
    if (!g.ok()) return Fail(g.status());
    gen = std::move(*g);
  } else {
    auto model = engine::Model::Load(o.model);
    if (!model.ok()) return Fail(model.status());
    engine::EngineConfig cfg;
    cfg.n_threads = o.threads;
    cfg.max_context = (*model)->config().context_length;
    cfg.max_num_seqs = o.max_num_seqs;
    cfg.max_batched_tokens = 512;
    auto e = engine::Engine::Create(cfg, std::move(*model));
    if (!e.ok()) return Fail(e.status());
    eng = std::move(*e);
    auto g = mr::EngineGenerator::Create(eng.get());
    if (!g.ok()) return Fail(g.status());
    gen = std::move(*g);
  }

  ProgressBar bar(!o.quiet);
  absl::StatusOr<mr::MapReduceResult> r = mr::RunMapReduce(
      *gen, *doc, o.question, o.mr, [&](const mr::ProgressEvent& e) { bar.Update(e); });
  bar.End();
  if (!r.ok()) return Fail(r.status());
  if (o.json_out) {
    json chunks = json::array();
    for (const mr::ChunkResult& c : r->chunks) {
      chunks.push_back({{"index", c.index},
                        {"extracted_information", c.extracted},
                        {"rationale", c.rationale},
                        {"answer", c.answer},
                        {"confidence", c.confidence},
                        {"no_information", c.no_information},
                        {"grounded", c.grounded}});
    }
    json out = {{"answer", r->answer},
                {"rationale", r->rationale},
                {"confidence", r->confidence},
                {"num_chunks", r->num_chunks},
                {"collapse_rounds", r->collapse_rounds},
                {"chunks", std::move(chunks)},
                {"prompt_tokens", r->prompt_tokens},
                {"cached_prompt_tokens", r->cached_prompt_tokens},
                {"completion_tokens", r->completion_tokens},
                {"seconds", r->seconds}};
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  } else {
    std::cout << r->answer << "\n";
    if (!o.quiet) {
      std::fprintf(stderr,
                   "confidence %.1f; %d chunks, %d collapse rounds, %lld prompt (%lld cached) + "
                   "%lld generated tokens, %.1f s\n",
                   r->confidence, r->num_chunks, r->collapse_rounds,
                   static_cast<long long>(r->prompt_tokens),
                   static_cast<long long>(r->cached_prompt_tokens),
                   static_cast<long long>(r->completion_tokens), r->seconds);
    }
  }
  return 0;
}

}  // namespace loom::server
