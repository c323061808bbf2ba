#include "pipelines/mapreduce/openai_generator.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace loom::pipelines::mapreduce {
namespace {

using json = nlohmann::json;

constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr size_t kMaxErrorBody = 500;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

absl::StatusOr<json> ParseJson(const std::string& body, std::string_view what) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InternalError(
        absl::StrCat("the server's ", std::string(what),
                     " answer is not a JSON object: ", body.substr(0, kMaxErrorBody)));
  }
  return j;
}

const json* Field(const json& obj, const char* name) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(name);
  return it == obj.end() ? nullptr : &*it;
}

std::string StringField(const json& obj, const char* name) {
  const json* f = Field(obj, name);
  return f != nullptr && f->is_string() ? f->get<std::string>() : std::string();
}

int64_t IntField(const json& obj, const char* name, int64_t fallback) {
  const json* f = Field(obj, name);
  return f != nullptr && f->is_number_integer() ? f->get<int64_t>() : fallback;
}

// The message of an error body: OpenAI's {"error": {"message"}}, vLLM's {"message"} or
// FastAPI's {"detail"}; else the body itself (truncated).
std::string ErrorMessage(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object()) {
    if (const json* e = Field(j, "error"); e != nullptr) {
      if (e->is_string()) return e->get<std::string>();
      if (std::string m = StringField(*e, "message"); !m.empty()) return m;
    }
    if (std::string m = StringField(j, "message"); !m.empty()) return m;
    if (const json* d = Field(j, "detail"); d != nullptr) {
      return d->is_string() ? d->get<std::string>() : Dump(*d).substr(0, kMaxErrorBody);
    }
  }
  return body.substr(0, kMaxErrorBody);
}

absl::Status HttpStatus(int code, const std::string& url, const std::string& body) {
  const std::string msg = absl::StrCat(url, " answered HTTP ", code, ": ", ErrorMessage(body));
  switch (code) {
    case 400:
    case 422:
      return absl::InvalidArgumentError(msg);
    case 401:
      return absl::UnauthenticatedError(msg);
    case 403:
      return absl::PermissionDeniedError(msg);
    case 404:
      return absl::NotFoundError(msg);
    case 408:
    case 504:
      return absl::DeadlineExceededError(msg);
    case 413:
    case 429:
      return absl::ResourceExhaustedError(msg);
    default:
      break;
  }
  if (code >= 500) return absl::UnavailableError(msg);
  return absl::UnknownError(msg);
}

void SetTimeout(double seconds, const std::function<void(time_t, time_t)>& set) {
  const auto usec = static_cast<int64_t>(seconds * 1e6);
  set(static_cast<time_t>(usec / 1000000), static_cast<time_t>(usec % 1000000));
}

json Messages(const std::vector<chat::ChatMessage>& messages) {
  json out = json::array();
  for (const chat::ChatMessage& m : messages) {
    out.push_back({{"role", m.role}, {"content", m.content}});
  }
  return out;
}

// {"count": N} (or the length of "tokens") from a /tokenize answer.
absl::StatusOr<int> TokenCount(const std::string& body) {
  LOOM_ASSIGN_OR_RETURN(json j, ParseJson(body, "/tokenize"));
  int64_t n = IntField(j, "count", -1);
  if (const json* t = Field(j, "tokens"); n < 0 && t != nullptr && t->is_array()) {
    n = static_cast<int64_t>(t->size());
  }
  if (n < 0) return absl::InternalError("the /tokenize answer has no count");
  return static_cast<int>(n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiGenerator>> OpenAiGenerator::Create(
    OpenAiGeneratorOptions options) {
  const std::string url = options.base_url;  // options moves into the generator below
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos ||
      (url.compare(0, scheme_end, "http") != 0 && url.compare(0, scheme_end, "https") != 0) ||
      scheme_end + 3 >= url.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base_url '", url, "' is not an http:// or https:// URL (e.g. http://127.0.0.1:8000/v1)"));
  }
  if (options.timeout_s <= 0 || options.connect_timeout_s <= 0) {
    return absl::InvalidArgumentError("the timeouts must be positive");
  }
  const size_t path = url.find('/', scheme_end + 3);
  std::unique_ptr<OpenAiGenerator> gen(new OpenAiGenerator(std::move(options)));
  gen->scheme_host_port_ = url.substr(0, path);
  gen->api_prefix_ = path == std::string::npos ? "" : url.substr(path);
  while (!gen->api_prefix_.empty() && gen->api_prefix_.back() == '/') gen->api_prefix_.pop_back();
  gen->root_prefix_ = gen->api_prefix_;
  if (gen->root_prefix_.ends_with("/v1")) gen->root_prefix_.resize(gen->root_prefix_.size() - 3);
  {
    httplib::Client probe(gen->scheme_host_port_);
    if (!probe.is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("base_url '", url, "' is not usable"));
    }
  }

  OpenAiGeneratorOptions& o = gen->options_;
  LOOM_ASSIGN_OR_RETURN(std::string body, gen->Send("GET", gen->api_prefix_ + "/models", "", {}));
  LOOM_ASSIGN_OR_RETURN(json models, ParseJson(body, "/models"));
  const json* data = Field(models, "data");
  if (data == nullptr || !data->is_array() || data->empty()) {
    return absl::FailedPreconditionError(absl::StrCat(url, "/models lists no model"));
  }
  const json* entry = &(*data)[0];
  for (const json& m : *data) {
    if (!o.model.empty() && StringField(m, "id") == o.model) entry = &m;
  }
  if (o.model.empty()) o.model = StringField(*entry, "id");
  gen->context_length_ = static_cast<int>(IntField(*entry, "max_model_len", 0));
  if (gen->context_length_ <= 0 && o.context_length <= 0) {
    json req = {{"model", o.model}, {"prompt", "x"}, {"add_special_tokens", false}};
    LOOM_ASSIGN_OR_RETURN(body, gen->Send("POST", gen->root_prefix_ + "/tokenize", Dump(req), {}));
    LOOM_ASSIGN_OR_RETURN(json tok, ParseJson(body, "/tokenize"));
    gen->context_length_ = static_cast<int>(IntField(tok, "max_model_len", 0));
  }
  if (o.context_length > 0) gen->context_length_ = o.context_length;
  if (gen->context_length_ <= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(url, " reports no max_model_len; set the generator's context_length"));
  }
  return gen;
}

absl::StatusOr<std::string> OpenAiGenerator::Send(const std::string& method,
                                                  const std::string& path, const std::string& body,
                                                  const std::function<bool()>& is_cancelled) const {
  httplib::Client cli(scheme_host_port_);
  SetTimeout(options_.connect_timeout_s,
             [&](time_t s, time_t u) { cli.set_connection_timeout(s, u); });
  SetTimeout(options_.timeout_s, [&](time_t s, time_t u) { cli.set_read_timeout(s, u); });
  SetTimeout(options_.timeout_s, [&](time_t s, time_t u) { cli.set_write_timeout(s, u); });
  if (!options_.api_key.empty()) cli.set_bearer_token_auth(options_.api_key);

  // A watcher closes the connection when the caller cancels.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::atomic<bool> stopped{false};
  std::thread watcher;
  if (is_cancelled) {
    watcher = std::thread([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (!cv.wait_for(lock, kPollInterval, [&] { return done; })) {
        if (is_cancelled()) {
          stopped.store(true);
          cli.stop();
        }
      }
    });
  }
  httplib::Result res = method == "GET" ? cli.Get(path) : cli.Post(path, body, "application/json");
  if (watcher.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_all();
    watcher.join();
  }
  const std::string url = scheme_host_port_ + path;
  if (stopped.load())
    return absl::CancelledError(absl::StrCat("the call to ", url, " was cancelled"));
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", url, ": ", httplib::to_string(res.error())));
  }
  if (res->status < 200 || res->status >= 300) return HttpStatus(res->status, url, res->body);
  return std::move(res->body);
}

absl::StatusOr<GenerateResult> OpenAiGenerator::Generate(const GenerateCall& call) {
  if (call.is_cancelled && call.is_cancelled())
    return absl::CancelledError("the call was cancelled");
  json req = {{"model", options_.model},
              {"messages", Messages(call.messages)},
              {"max_tokens", call.max_tokens},
              {"temperature", call.temperature},
              {"seed", call.seed},
              {"stream", false}};
  if (!call.grammar.empty()) {
    for (const std::string& field : options_.grammar_fields) req[field] = call.grammar;
  }
  LOOM_ASSIGN_OR_RETURN(std::string body, Send("POST", api_prefix_ + "/chat/completions", Dump(req),
                                               call.is_cancelled));
  LOOM_ASSIGN_OR_RETURN(json j, ParseJson(body, "/chat/completions"));
  const json* choices = Field(j, "choices");
  if (choices == nullptr || !choices->is_array() || choices->empty()) {
    return absl::InternalError(
        absl::StrCat("the chat completion has no choices: ", body.substr(0, kMaxErrorBody)));
  }
  const json& choice = (*choices)[0];
  GenerateResult out;
  if (const json* msg = Field(choice, "message"); msg != nullptr)
    out.text = StringField(*msg, "content");
  out.finish_reason = StringField(choice, "finish_reason");
  if (const json* usage = Field(j, "usage"); usage != nullptr) {
    out.prompt_tokens = static_cast<int>(IntField(*usage, "prompt_tokens", 0));
    out.completion_tokens = static_cast<int>(IntField(*usage, "completion_tokens", 0));
    if (const json* details = Field(*usage, "prompt_tokens_details"); details != nullptr) {
      out.cached_prompt_tokens = static_cast<int>(IntField(*details, "cached_tokens", 0));
    }
  }
  return out;
}

absl::StatusOr<int> OpenAiGenerator::CountTokens(std::string_view text) {
  json req = {
      {"model", options_.model}, {"prompt", std::string(text)}, {"add_special_tokens", false}};
  LOOM_ASSIGN_OR_RETURN(std::string body, Send("POST", root_prefix_ + "/tokenize", Dump(req), {}));
  return TokenCount(body);
}

absl::StatusOr<int> OpenAiGenerator::CountPromptTokens(
    const std::vector<chat::ChatMessage>& messages) {
  json req = {
      {"model", options_.model}, {"messages", Messages(messages)}, {"add_generation_prompt", true}};
  LOOM_ASSIGN_OR_RETURN(std::string body, Send("POST", root_prefix_ + "/tokenize", Dump(req), {}));
  return TokenCount(body);
}

}  // namespace loom::pipelines::mapreduce
