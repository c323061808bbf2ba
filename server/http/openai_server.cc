#include "server/http/openai_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::server::http {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SetJson(const json& body, HttpResponse* res) {
  res->status = 200;
  res->content_type = "application/json";
  res->body = Dump(body);
}

void SetError(const ApiError& e, HttpResponse* res) {
  res->status = e.status;
  res->content_type = "application/json";
  res->body = ErrorBody(e);
  if (e.status == 429) res->headers.emplace_back("Retry-After", "1");
  if (e.status == 401) res->headers.emplace_back("WWW-Authenticate", "Bearer");
}

ApiError Error(int status, std::string message, std::string type, std::string code = "") {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

ApiError Unavailable(std::string message) {
  return Error(503, std::move(message), "service_unavailable", "service_unavailable");
}

// A random id such as "chatcmpl-3f9a..." (24 hex digits).
std::string NewId(std::string_view prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrFormat("%s%016x%08x", std::string(prefix), rng(), rng() & 0xffffffffu);
}

int64_t UnixNow() { return static_cast<int64_t>(std::time(nullptr)); }

// JSON has no -inf; OpenAI-compatible servers report -9999 for impossible tokens.
double Finite(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

json Bytes(const std::string& s) {
  json a = json::array();
  for (unsigned char c : s) a.push_back(c);
  return a;
}

constexpr milliseconds kPoll{50};      // how often a waiting handler checks its client
constexpr milliseconds kMultiWait{5};  // wait per stream when several choices interleave

}  // namespace

// One HTTP generation request: its engine streams (one per choice) and what they produced.
struct OpenAiServer::Job {
  struct Choice {
    int index = 0;
    std::shared_ptr<engine::RequestStream> stream;
    bool done = false;
    std::string text;
    std::string finish_reason;
    absl::Status status;
    int completion_tokens = 0;
    int cached_tokens = 0;
    json chat_logprobs = json::array();  // chat: logprobs.content
    json tokens = json::array();         // completions: the four parallel lists
    json token_logprobs = json::array();
    json top_logprobs = json::array();
    json text_offset = json::array();
  };

  ~Job() {
    for (Choice& c : choices) {
      if (c.stream && !c.done) c.stream->Cancel();
    }
  }
  void CancelAll() {
    for (Choice& c : choices) {
      if (c.stream) c.stream->Cancel();
    }
  }
  bool AllDone() const {
    return std::all_of(choices.begin(), choices.end(), [](const Choice& c) { return c.done; });
  }

  // The next event of any unfinished choice (round robin); false when none came within `wait`.
  bool Next(size_t* which, engine::StreamEvent* ev, milliseconds wait) {
    const size_t n = choices.size();
    bool timed_out = false;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (next + k) % n;
      if (choices[i].done) continue;
      if (choices[i].stream->NextFor(ev, milliseconds(0), &timed_out)) {
        next = i + 1;
        *which = i;
        return true;
      }
      if (!timed_out) MarkLost(choices[i]);
    }
    for (size_t i = 0; i < n; ++i) {
      if (choices[i].done) continue;
      if (choices[i].stream->NextFor(ev, n == 1 ? wait : kMultiWait, &timed_out)) {
        *which = i;
        return true;
      }
      if (!timed_out) MarkLost(choices[i]);
      return false;
    }
    return false;
  }
  // A stream that ended without a final event (should not happen); ends the choice.
  static void MarkLost(Choice& c) {
    c.done = true;
    c.finish_reason = "error";
    c.status = absl::InternalError("the engine stream ended without a final event");
  }

  // Adds one event's text and logprobs to the choice; returns the logprobs JSON for this event
  // (null when not asked for), in the endpoint's shape.
  json Absorb(Choice& c, const engine::StreamEvent& ev) {
    json lp = nullptr;
    if (params.logprobs >= 0 && ev.logprobs && ev.token >= 0) {
      const sampler::TokenLogprobs& l = *ev.logprobs;
      const std::string piece = tok->TokenToPiece(l.chosen.token, /*render_special=*/true);
      if (chat) {
        json top = json::array();
        for (const auto& t : l.top) {
          const std::string p = tok->TokenToPiece(t.token, true);
          top.push_back({{"token", p}, {"logprob", Finite(t.logprob)}, {"bytes", Bytes(p)}});
        }
        json entry = {{"token", piece},
                      {"logprob", Finite(l.chosen.logprob)},
                      {"bytes", Bytes(piece)},
                      {"top_logprobs", std::move(top)}};
        c.chat_logprobs.push_back(entry);
        lp = {{"content", json::array({std::move(entry)})}};
      } else {
        json top = json::object();
        for (const auto& t : l.top) top[tok->TokenToPiece(t.token, true)] = Finite(t.logprob);
        const double chosen = Finite(l.chosen.logprob);
        c.tokens.push_back(piece);
        c.token_logprobs.push_back(chosen);
        c.top_logprobs.push_back(top);
        c.text_offset.push_back(c.text.size());
        lp = {{"tokens", {piece}},
              {"token_logprobs", {chosen}},
              {"top_logprobs", json::array({top})},
              {"text_offset", {c.text.size()}}};
      }
    }
    c.text += ev.text;
    if (ev.finished) {
      c.done = true;
      c.finish_reason = ev.finish_reason;
      c.status = ev.status;
      c.completion_tokens = ev.usage.completion_tokens;
      c.cached_tokens = ev.usage.cached_prompt_tokens;
    }
    return lp;
  }

  json Usage() const {
    int completion = 0, cached = 0;
    for (const Choice& c : choices) {
      completion += c.completion_tokens;
      cached = std::max(cached, c.cached_tokens);
    }
    json u = {{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion},
              {"total_tokens", prompt_tokens + completion}};
    if (cached > 0) u["prompt_tokens_details"] = {{"cached_tokens", cached}};
    return u;
  }

  // The error a choice that did not end normally maps to, if any.
  static std::optional<ApiError> Failure(const Choice& c) {
    if (c.finish_reason == "stop" || c.finish_reason == "length") return std::nullopt;
    if (c.finish_reason == "timeout") {
      return Error(408, "the request timed out", "timeout_error", "request_timeout");
    }
    if (c.finish_reason == "cancelled") return Unavailable("the request was cancelled");
    return Error(500, c.status.ok() ? "generation failed" : std::string(c.status.message()),
                 "server_error");
  }

  json ChunkBase() const {
    json j = {{"id", id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model}};
    return j;
  }

  // The message of a finished tool-calling choice: tool_calls (finish_reason "tool_calls") or
  // the text answer; an answer cut short by max_tokens stays raw text ("length").
  json ToolMessage(const Choice& c, std::string* finish_reason) const {
    json msg = {{"role", "assistant"}};
    absl::StatusOr<frontend::ToolOutput> out = frontend::ParseToolOutput(c.text);
    *finish_reason = c.finish_reason;
    if (!out.ok()) {
      msg["content"] = c.text;
      return msg;
    }
    if (out->calls.empty()) {
      msg["content"] = out->content;
      return msg;
    }
    msg["content"] = nullptr;
    json calls = json::array();
    for (const frontend::ToolCall& call : out->calls) {
      calls.push_back({{"id", call.id},
                       {"type", "function"},
                       {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
    }
    msg["tool_calls"] = std::move(calls);
    *finish_reason = "tool_calls";
    return msg;
  }

  bool chat = false;
  bool tools = false;  // a tool-calling chat: answers are parsed, not streamed token by token
  GenerationParams params;
  std::string id;
  int64_t created = 0;
  std::string model;
  int prompt_tokens = 0;  // summed over prompts (each counted once, whatever n is)
  const tokenizer::Tokenizer* tok = nullptr;
  std::vector<Choice> choices;
  frontend::Submission sub;  // the engine streams and the concurrency slot
  size_t next = 0;
};

OpenAiServer::OpenAiServer(frontend::Frontend* frontend) : fe_(frontend) {}
OpenAiServer::~OpenAiServer() = default;

ApiError OpenAiServer::FromStatus(const absl::Status& s) {
  const std::string msg(s.message());
  const std::string param = frontend::StatusParam(s), code = frontend::StatusErrorCode(s);
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:  // an unknown model is a 400 in OpenAI's API
      return InvalidRequest(msg, param, code);
    case absl::StatusCode::kUnauthenticated:
      return Error(401, msg, "invalid_request_error", code);
    case absl::StatusCode::kResourceExhausted:
      return Error(429, msg, "rate_limit_exceeded", "rate_limit_exceeded");
    case absl::StatusCode::kUnavailable:
      return Unavailable(msg);
    case absl::StatusCode::kDeadlineExceeded:
      return Error(408, msg, "timeout_error", "request_timeout");
    default:
      return Error(500, msg, "server_error");
  }
}

void OpenAiServer::FormatError(int status, std::string_view message, HttpResponse* res) {
  std::string type = "invalid_request_error", code;
  switch (status) {
    case 404:
      code = "not_found";
      break;
    case 405:
      code = "method_not_allowed";
      break;
    case 413:
      code = "request_too_large";
      break;
    default:
      if (status >= 500) type = "server_error";
      break;
  }
  SetError(Error(status, std::string(message), type, code), res);
}

void OpenAiServer::RegisterRoutes(HttpServer& http) {
  auto bind = [this](void (OpenAiServer::*fn)(const HttpRequest&, HttpResponse*)) {
    return [this, fn](const HttpRequest& req, HttpResponse* res) { (this->*fn)(req, res); };
  };
  http.Route("POST", "/v1/chat/completions", bind(&OpenAiServer::HandleChat));
  http.Route("POST", "/v1/completions", bind(&OpenAiServer::HandleCompletions));
  http.Route("GET", "/v1/models", bind(&OpenAiServer::HandleModels));
  http.Route("POST", "/tokenize", bind(&OpenAiServer::HandleTokenize));
  http.Route("POST", "/detokenize", bind(&OpenAiServer::HandleDetokenize));
  http.Route("GET", "/v1/engine/stats", bind(&OpenAiServer::HandleStats));
  http.Route("GET", "/health", [this](const HttpRequest& req, HttpResponse* res) {
    HandleHealth(req, res, /*readiness=*/true);
  });
  http.Route("GET", "/v2/health/ready", [this](const HttpRequest& req, HttpResponse* res) {
    HandleHealth(req, res, /*readiness=*/true);
  });
  http.Route("GET", "/v2/health/live", [this](const HttpRequest& req, HttpResponse* res) {
    HandleHealth(req, res, /*readiness=*/false);
  });
}

void OpenAiServer::HandleHealth(const HttpRequest&, HttpResponse* res, bool readiness) {
  const char* state = fe_->draining() ? "draining" : fe_->engine() == nullptr ? "loading" : "ready";
  const bool ok = !readiness || std::string_view(state) == "ready";
  SetJson({{"status", state}}, res);
  res->status = ok ? 200 : 503;
}

bool OpenAiServer::Admit(const HttpRequest& req, HttpResponse* res) {
  absl::Status st = fe_->Authenticate(req.Header("Authorization"));
  if (st.ok()) st = fe_->CheckServing();
  if (st.ok()) return true;
  SetError(FromStatus(st), res);
  return false;
}

void OpenAiServer::HandleChat(const HttpRequest& req, HttpResponse* res) {
  if (!Admit(req, res)) return;
  ChatCompletionRequest r;
  if (auto err = ParseChatCompletionRequest(req.body, &r)) return SetError(*err, res);
  if (absl::Status st = fe_->CheckModel(r.params.model); !st.ok()) {
    return SetError(FromStatus(st), res);
  }
  const bool tools = r.tools.active();
  if (tools) {
    // Generic tool calling: the tools go into the system message and the answer is generated
    // under the tool-call schema (server/frontend/tools.h).
    if (absl::Status st = frontend::PrepareToolMessages(r.tools, &r.messages); !st.ok()) {
      return SetError(FromStatus(st), res);
    }
    r.params.constraint = {frontend::OutputConstraint::Kind::kJsonSchema,
                           frontend::ToolOutputSchema(r.tools), "tools"};
  }
  absl::StatusOr<std::vector<int32_t>> prompt = fe_->ChatPrompt(r.messages);
  if (!prompt.ok()) return SetError(FromStatus(prompt.status()), res);
  std::vector<std::vector<int32_t>> prompts;
  prompts.push_back(std::move(*prompt));
  Generate(req, res, /*chat=*/true, r.params, std::move(prompts), tools);
}

void OpenAiServer::HandleCompletions(const HttpRequest& req, HttpResponse* res) {
  if (!Admit(req, res)) return;
  CompletionRequest r;
  if (auto err = ParseCompletionRequest(req.body, &r)) return SetError(*err, res);
  if (absl::Status st = fe_->CheckModel(r.params.model); !st.ok()) {
    return SetError(FromStatus(st), res);
  }
  const tokenizer::Tokenizer& tok = fe_->engine()->tokenizer();
  std::vector<std::vector<int32_t>> prompts;
  for (PromptInput& p : r.prompts) {
    if (p.is_tokens) {
      if (absl::Status st = fe_->CheckTokenIds(p.tokens, "prompt"); !st.ok()) {
        return SetError(FromStatus(st), res);
      }
      prompts.push_back(std::move(p.tokens));
    } else {
      prompts.push_back(tok.Encode(p.text, /*add_special=*/true, /*parse_special=*/true));
    }
  }
  Generate(req, res, /*chat=*/false, r.params, std::move(prompts), /*tools=*/false);
}

void OpenAiServer::Generate(const HttpRequest& req, HttpResponse* res, bool chat,
                            const GenerationParams& params,
                            std::vector<std::vector<int32_t>> prompts, bool tools) {
  absl::StatusOr<frontend::Submission> sub =
      fe_->Submit(prompts, params, chat ? "messages" : "prompt");
  if (!sub.ok()) return SetError(FromStatus(sub.status()), res);
  auto job = std::make_shared<Job>();
  job->chat = chat;
  job->tools = tools;
  job->params = params;
  job->id = NewId(chat ? "chatcmpl-" : "cmpl-");
  job->created = UnixNow();
  job->model = fe_->model_names().front();
  job->tok = &fe_->engine()->tokenizer();
  job->prompt_tokens = sub->prompt_tokens;
  for (size_t i = 0; i < sub->streams.size(); ++i) {
    Job::Choice c;
    c.index = static_cast<int>(i);
    c.stream = sub->streams[i];
    job->choices.push_back(std::move(c));
  }
  job->sub = std::move(*sub);

  if (!params.stream) return Collect(req, *job, res);
  res->status = 200;
  res->content_type = "text/event-stream";
  res->stream = [this, job](StreamWriter& w) { Stream(*job, w); };
}

// Non-streaming: wait for every choice, giving up if the client goes away.
void OpenAiServer::Collect(const HttpRequest& req, Job& job, HttpResponse* res) {
  size_t which = 0;
  engine::StreamEvent ev;
  auto last_check = Clock::now();
  while (!job.AllDone()) {
    const bool got = job.Next(&which, &ev, kPoll);
    if (got) job.Absorb(job.choices[which], ev);
    const auto now = Clock::now();
    if (!got || now - last_check >= kPoll) {
      last_check = now;
      if (req.ClientDisconnected()) {
        job.CancelAll();
        SetError(Error(499, "client closed the connection", "invalid_request_error"), res);
        return;
      }
    }
  }
  for (const Job::Choice& c : job.choices) {
    if (auto err = Job::Failure(c)) return SetError(*err, res);
  }
  json choices = json::array();
  for (const Job::Choice& c : job.choices) {
    json choice = {{"index", c.index}};
    std::string finish = c.finish_reason;
    if (job.tools) {
      choice["message"] = job.ToolMessage(c, &finish);
      choice["logprobs"] = nullptr;
    } else if (job.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      choice["logprobs"] =
          job.params.logprobs >= 0 ? json{{"content", c.chat_logprobs}} : json(nullptr);
    } else {
      choice["text"] = c.text;
      choice["logprobs"] = job.params.logprobs >= 0 ? json{{"tokens", c.tokens},
                                                           {"token_logprobs", c.token_logprobs},
                                                           {"top_logprobs", c.top_logprobs},
                                                           {"text_offset", c.text_offset}}
                                                    : json(nullptr);
    }
    choice["finish_reason"] = finish;
    choices.push_back(std::move(choice));
  }
  json body = {{"id", job.id},
               {"object", job.chat ? "chat.completion" : "text_completion"},
               {"created", job.created},
               {"model", job.model},
               {"choices", std::move(choices)},
               {"usage", job.Usage()}};
  SetJson(body, res);
}

// Streaming: one server-sent event per token event, then [DONE].
void OpenAiServer::Stream(Job& job, StreamWriter& w) {
  const bool usage_chunks = job.params.include_usage;
  auto send = [&](json chunk) {
    if (usage_chunks && !chunk.contains("usage")) chunk["usage"] = nullptr;
    return w.Write(absl::StrCat("data: ", Dump(chunk), "\n\n"));
  };
  auto choice_chunk = [&](int index, json delta_or_text, json logprobs, json finish) {
    json c = {{"index", index}};
    if (job.chat) {
      c["delta"] = std::move(delta_or_text);
    } else {
      c["text"] = std::move(delta_or_text);
    }
    c["logprobs"] = std::move(logprobs);
    c["finish_reason"] = std::move(finish);
    json chunk = job.ChunkBase();
    chunk["choices"] = json::array({std::move(c)});
    return chunk;
  };
  auto gone = [&] {
    job.CancelAll();  // frees the sequences within one engine step
  };

  if (job.chat) {
    for (const Job::Choice& c : job.choices) {
      if (!send(
              choice_chunk(c.index, {{"role", "assistant"}, {"content", ""}}, nullptr, nullptr))) {
        return gone();
      }
    }
  }
  size_t which = 0;
  engine::StreamEvent ev;
  while (!job.AllDone()) {
    if (w.ClientDisconnected()) return gone();
    if (!job.Next(&which, &ev, kPoll)) continue;
    Job::Choice& c = job.choices[which];
    json lp = job.Absorb(c, ev);
    if (!job.tools && (!ev.text.empty() || !lp.is_null())) {
      json payload = job.chat ? json{{"content", ev.text}} : json(ev.text);
      if (!send(choice_chunk(c.index, std::move(payload), std::move(lp), nullptr))) {
        return gone();
      }
    }
    if (!ev.finished) continue;
    if (auto err = Job::Failure(c)) {
      // Mid-stream failure: OpenAI's SDK raises on an event that carries "error".
      json e = json::parse(ErrorBody(*err), nullptr, false);
      w.Write(absl::StrCat("data: ", Dump(e), "\n\n"));
      w.Write("data: [DONE]\n\n");
      job.CancelAll();
      return;
    }
    std::string finish = c.finish_reason;
    if (job.tools) {
      // The whole answer as one delta: tool_calls with index, id, name and all the arguments
      // (the OpenAI SDK accumulates deltas, so one complete delta is valid), or the content.
      json msg = job.ToolMessage(c, &finish);
      json delta = json::object();
      if (msg.contains("tool_calls")) {
        json calls = msg["tool_calls"];
        for (size_t k = 0; k < calls.size(); ++k) calls[k]["index"] = k;
        delta["tool_calls"] = std::move(calls);
      } else {
        delta["content"] = msg["content"];
      }
      if (!send(choice_chunk(c.index, std::move(delta), nullptr, nullptr))) return gone();
    }
    json payload = job.chat ? json::object() : json("");
    if (!send(choice_chunk(c.index, std::move(payload), nullptr, finish))) {
      return gone();
    }
  }
  if (usage_chunks) {
    json chunk = job.ChunkBase();
    chunk["choices"] = json::array();
    chunk["usage"] = job.Usage();
    if (!send(std::move(chunk))) return;
  }
  w.Write("data: [DONE]\n\n");
}

void OpenAiServer::HandleModels(const HttpRequest& req, HttpResponse* res) {
  if (!Admit(req, res)) return;
  json data = json::array();
  data.push_back({{"id", fe_->model_names().front()},
                  {"object", "model"},
                  {"created", fe_->created()},
                  {"owned_by", "loom"},
                  {"max_model_len", fe_->ContextLength()}});
  SetJson({{"object", "list"}, {"data", std::move(data)}}, res);
}

void OpenAiServer::HandleTokenize(const HttpRequest& req, HttpResponse* res) {
  if (!Admit(req, res)) return;
  TokenizeRequest r;
  if (auto err = ParseTokenizeRequest(req.body, &r)) return SetError(*err, res);
  if (absl::Status st = fe_->CheckModel(r.model); !st.ok()) return SetError(FromStatus(st), res);
  const tokenizer::Tokenizer& tok = fe_->engine()->tokenizer();
  std::vector<int32_t> tokens;
  if (r.prompt) {
    tokens = tok.Encode(*r.prompt, r.add_special_tokens, /*parse_special=*/true);
  } else {
    auto text = fe_->RenderChat(r.messages, r.add_generation_prompt);
    if (!text.ok()) return SetError(FromStatus(text.status()), res);
    tokens = tok.Encode(*text, r.add_special_tokens, /*parse_special=*/true);
  }
  SetJson({{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", fe_->ContextLength()}},
          res);
}

void OpenAiServer::HandleDetokenize(const HttpRequest& req, HttpResponse* res) {
  if (!Admit(req, res)) return;
  DetokenizeRequest r;
  if (auto err = ParseDetokenizeRequest(req.body, &r)) return SetError(*err, res);
  if (absl::Status st = fe_->CheckModel(r.model); !st.ok()) return SetError(FromStatus(st), res);
  const tokenizer::Tokenizer& tok = fe_->engine()->tokenizer();
  if (absl::Status st = fe_->CheckTokenIds(r.tokens, "tokens"); !st.ok()) {
    return SetError(FromStatus(st), res);
  }
  SetJson({{"prompt", tok.Decode(r.tokens, /*render_special=*/true)}}, res);
}

void OpenAiServer::HandleStats(const HttpRequest& req, HttpResponse* res) {
  if (!Admit(req, res)) return;
  const engine::EngineStats s = fe_->engine()->Stats();
  const engine::EngineStats::Duo& d = s.duo;
  SetJson({{"num_running", s.num_running},
           {"num_waiting", s.num_waiting},
           {"kv_cache_usage", s.kv_cache_usage},
           {"prompt_tokens_total", s.prompt_tokens_total},
           {"generation_tokens_total", s.generation_tokens_total},
           {"prefix_cache_queries", s.prefix_cache_queries},
           {"prefix_cache_hits", s.prefix_cache_hits},
           {"preemptions", s.preemptions},
           {"steps", s.steps},
           {"kv_retrieval_bytes", s.kv_retrieval_bytes},
           {"kv_streaming_bytes", s.kv_streaming_bytes},
           {"kv_retrieval_capacity_bytes", s.kv_retrieval_capacity_bytes},
           {"kv_streaming_capacity_bytes", s.kv_streaming_capacity_bytes},
           {"duo_attention",
            {{"enabled", d.enabled},
             {"sparsity", d.sparsity},
             {"sink", d.sink},
             {"recent", d.recent},
             {"streaming_kv_heads", d.streaming_kv_heads},
             {"total_kv_heads", d.total_kv_heads},
             {"prefix_caching", d.prefix_caching},
             {"prefix_snapshots", d.prefix_snapshots},
             {"prefix_snapshot_capacity", d.prefix_snapshot_capacity},
             {"prefix_snapshot_bytes", d.prefix_snapshot_bytes}}},
           {"http_requests_in_flight", fe_->in_flight()}},
          res);
}

}  // namespace loom::server::http
