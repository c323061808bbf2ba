#include "server/pipelines/mapreduce_api.h"

#include <charconv>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/http/openai_protocol.h"
#include "server/http/openai_server.h"

namespace loom::server::pipelines {
namespace {

namespace mr = loom::pipelines::mapreduce;
using json = nlohmann::ordered_json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json ChunkJson(const mr::ChunkResult& c) {
  return {{"index", c.index},           {"extracted_information", c.extracted},
          {"rationale", c.rationale},   {"answer", c.answer},
          {"confidence", c.confidence}, {"no_information", c.no_information},
          {"grounded", c.grounded}};
}

json ProgressJson(const mr::ProgressEvent& e) {
  json j = {{"type", "progress"}, {"stage", e.stage}, {"done", e.done}, {"total", e.total}};
  if (e.stage == "collapse") j["round"] = e.round;
  if (e.result) j["chunk"] = ChunkJson(*e.result);
  return j;
}

json ResultJson(const mr::MapReduceResult& r) {
  json chunks = json::array();
  for (const mr::ChunkResult& c : r.chunks) chunks.push_back(ChunkJson(c));
  return {{"type", "result"},
          {"answer", r.answer},
          {"rationale", r.rationale},
          {"confidence", r.confidence},
          {"num_chunks", r.num_chunks},
          {"collapse_rounds", r.collapse_rounds},
          {"chunks", std::move(chunks)},
          {"usage",
           {{"prompt_tokens", r.prompt_tokens},
            {"completion_tokens", r.completion_tokens},
            {"total_tokens", r.prompt_tokens + r.completion_tokens},
            {"prompt_tokens_details", {{"cached_tokens", r.cached_prompt_tokens}}}}},
          {"seconds", r.seconds}};
}

http::ApiError Invalid(std::string message, std::string param) {
  return http::InvalidRequest(std::move(message), std::move(param));
}

// The request from a JSON body or a multipart/form-data upload (the document as the part
// "file" or "document", the other fields as text parts).
std::optional<http::ApiError> ParseCall(const http::HttpRequest& req, MapReduceCall* call,
                                        bool* stream) {
  std::map<std::string, std::string> text;
  json obj;
  if (!req.form.empty()) {
    const http::FormPart* doc = req.Part("file");
    if (doc == nullptr) doc = req.Part("document");
    if (doc == nullptr) return Invalid("upload the document as the form part 'file'", "file");
    call->document = doc->content;
    for (const http::FormPart& p : req.form) {
      if (&p != doc) text[p.name] = p.content;
    }
  } else {
    obj = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded() || !obj.is_object()) {
      return Invalid("the request body must be a JSON object (or a multipart/form-data upload)",
                     "");
    }
    for (const auto& [k, v] : obj.items()) {
      if (v.is_null()) continue;
      if (v.is_string()) {
        text[k] = v.get<std::string>();
      } else if (v.is_number() || v.is_boolean()) {
        text[k] = v.dump();
      } else {
        return Invalid(absl::StrCat("'", k, "' must be a string or a number"), k);
      }
    }
    if (!text.count("document")) return Invalid("'document' is required", "document");
    call->document = text["document"];
  }
  if (!text.count("question")) return Invalid("'question' is required", "question");
  call->question = text["question"];
  if (text.count("model")) call->model = text["model"];
  if (text.count("task")) call->task = text["task"];
  if (text.count("evidence")) call->evidence = text["evidence"];
  if (text.count("values")) call->values = text["values"];
  auto get_int = [&](const char* name, int* out) -> std::optional<http::ApiError> {
    auto it = text.find(name);
    if (it == text.end()) return std::nullopt;
    const std::string& v = it->second;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
    if (ec != std::errc() || p != v.data() + v.size()) {
      return Invalid(absl::StrCat("'", name, "' must be an integer"), name);
    }
    return std::nullopt;
  };
  if (auto e = get_int("context_window", &call->context_window)) return e;
  if (auto e = get_int("chunk_size", &call->context_window)) return e;  // an alias
  if (auto e = get_int("max_tokens", &call->max_tokens)) return e;
  if (auto e = get_int("max_collapse_rounds", &call->max_collapse_rounds)) return e;
  if (auto it = text.find("temperature"); it != text.end()) {
    char* end = nullptr;
    call->temperature = std::strtof(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0') {
      return Invalid("'temperature' must be a number", "temperature");
    }
  }
  if (auto it = text.find("stream"); it != text.end()) {
    if (it->second != "true" && it->second != "false") {
      return Invalid("'stream' must be a boolean", "stream");
    }
    *stream = it->second == "true";
  }
  return std::nullopt;
}

void SetError(const http::ApiError& e, http::HttpResponse* res) {
  res->status = e.status;
  res->content_type = "application/json";
  res->body = http::ErrorBody(e);
}

// Pipeline statuses as HTTP errors: FailedPrecondition (cannot collapse) is a 422.
http::ApiError HttpError(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kFailedPrecondition) {
    http::ApiError e = http::InvalidRequest(std::string(s.message()));
    e.status = 422;
    e.code = "collapse_failed";
    return e;
  }
  if (s.code() == absl::StatusCode::kCancelled) {
    http::ApiError e = http::InvalidRequest(std::string(s.message()));
    e.status = 499;
    return e;
  }
  return http::OpenAiServer::FromStatus(s);
}

}  // namespace

absl::Status MapReduceApiOptions::Validate() const {
  if (max_document_bytes < 1) {
    return absl::InvalidArgumentError("--mapreduce-max-document-bytes must be positive");
  }
  if (max_parallel < 1) return absl::InvalidArgumentError("--mapreduce-max-parallel must be >= 1");
  return absl::OkStatus();
}

absl::StatusOr<mr::Generator*> MapReduceApi::GetGenerator() {
  std::lock_guard<std::mutex> lock(mu_);
  if (generator_ == nullptr) {
    engine::Engine* e = fe_->engine();
    if (e == nullptr) return fe_->CheckServing();
    absl::StatusOr<std::unique_ptr<mr::EngineGenerator>> g = mr::EngineGenerator::Create(e);
    if (!g.ok()) return g.status();
    generator_ = std::move(*g);
  }
  return generator_.get();
}

absl::StatusOr<mr::MapReduceResult> MapReduceApi::Run(
    const MapReduceCall& call, const std::function<void(const mr::ProgressEvent&)>& on_progress,
    const std::atomic<bool>* cancelled) {
  if (absl::Status s = fe_->CheckModel(call.model); !s.ok()) return s;
  mr::MapReduceOptions opts;
  opts.context_window = call.context_window;
  opts.max_tokens = call.max_tokens;
  opts.max_collapse_rounds = call.max_collapse_rounds;
  opts.task = call.task;
  opts.temperature = call.temperature;
  opts.evidence = call.evidence;
  opts.values = call.values;
  opts.prompts_dir = options_.prompts_dir;
  opts.max_parallel = options_.max_parallel;
  opts.max_document_bytes = options_.max_document_bytes;
  if (absl::Status s = opts.Validate(); !s.ok()) return s;
  absl::StatusOr<mr::Generator*> gen = GetGenerator();
  if (!gen.ok()) return gen.status();
  return mr::RunMapReduce(**gen, call.document, call.question, opts, on_progress, cancelled);
}

void MapReduceApi::RegisterRoutes(http::HttpServer& http) {
  http.Route("POST", "/v1/pipelines/mapreduce",
             [this](const http::HttpRequest& req, http::HttpResponse* res) { Handle(req, res); });
}

void MapReduceApi::Handle(const http::HttpRequest& req, http::HttpResponse* res) {
  absl::Status st = fe_->Authenticate(req.Header("Authorization"));
  if (st.ok()) st = fe_->CheckServing();
  if (!st.ok()) return SetError(HttpError(st), res);
  auto call = std::make_shared<MapReduceCall>();
  bool stream = false;
  if (auto err = ParseCall(req, call.get(), &stream)) return SetError(*err, res);
  if (static_cast<int64_t>(call->document.size()) > options_.max_document_bytes) {
    http::ApiError e =
        Invalid(absl::StrCat("the document has ", call->document.size(),
                             " bytes; this server accepts at most ", options_.max_document_bytes),
                "document");
    e.status = 413;
    e.code = "document_too_large";
    return SetError(e, res);
  }
  if (!stream) {
    std::atomic<bool> cancelled{false};
    auto on_progress = [&](const mr::ProgressEvent&) {
      if (req.ClientDisconnected()) cancelled.store(true);
    };
    absl::StatusOr<mr::MapReduceResult> r = Run(*call, on_progress, &cancelled);
    if (!r.ok()) return SetError(HttpError(r.status()), res);
    json body = ResultJson(*r);
    body.erase("type");
    res->status = 200;
    res->content_type = "application/json";
    res->body = Dump(body);
    return;
  }
  // Streamed: bad input is still a plain 400 before the stream starts.
  if (absl::Status s =
          loom::pipelines::mapreduce::ValidateDocument(call->document, options_.max_document_bytes);
      !s.ok()) {
    return SetError(HttpError(s), res);
  }
  if (absl::Status s = fe_->CheckModel(call->model); !s.ok()) return SetError(HttpError(s), res);
  res->status = 200;
  res->content_type = "text/event-stream";
  res->stream = [this, call](http::StreamWriter& w) {
    std::atomic<bool> cancelled{false};
    auto send = [&](const json& j) {
      if (!w.Write(absl::StrCat("data: ", Dump(j), "\n\n"))) cancelled.store(true);
    };
    absl::StatusOr<mr::MapReduceResult> r = Run(
        *call, [&](const mr::ProgressEvent& e) { send(ProgressJson(e)); }, &cancelled);
    if (cancelled.load()) return;
    if (r.ok()) {
      send(ResultJson(*r));
    } else {
      json e = json::parse(http::ErrorBody(HttpError(r.status())), nullptr, false);
      e["type"] = "error";
      send(e);
    }
    w.Write("data: [DONE]\n\n");
  };
}

}  // namespace loom::server::pipelines
