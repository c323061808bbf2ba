#include "server/frontend/frontend.h"

#include <algorithm>
#include <ctime>
#include <mutex>
#include <random>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/grammar/json_schema.h"

namespace loom::server::frontend {
namespace {

constexpr char kParamUrl[] = "loom.dev/param";
constexpr char kCodeUrl[] = "loom.dev/code";

std::string Payload(const absl::Status& s, const char* url) {
  auto c = s.GetPayload(url);
  return c ? std::string(*c) : std::string();
}

uint64_t RandomSeed() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return rng();
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % (b.empty() ? 1 : b.size())];
  return diff == 0 && !b.empty();
}

absl::Status Invalid(std::string_view message, std::string_view param, std::string_view code = "") {
  return ApiStatus(absl::StatusCode::kInvalidArgument, message, param, code);
}

}  // namespace

absl::Status ApiStatus(absl::StatusCode code, std::string_view message, std::string_view param,
                       std::string_view error_code) {
  absl::Status s(code, std::string(message));
  if (!param.empty()) s.SetPayload(kParamUrl, absl::Cord(std::string(param)));
  if (!error_code.empty()) s.SetPayload(kCodeUrl, absl::Cord(std::string(error_code)));
  return s;
}

std::string StatusParam(const absl::Status& status) { return Payload(status, kParamUrl); }
std::string StatusErrorCode(const absl::Status& status) { return Payload(status, kCodeUrl); }

Submission::~Submission() { CancelAll(); }

void Submission::CancelAll() {
  for (auto& s : streams) {
    if (s) s->Cancel();
  }
}

Frontend::Frontend(FrontendOptions options) : options_(std::move(options)) {}

absl::Status Frontend::SetEngine(engine::Engine* engine, std::vector<std::string> names) {
  if (engine == nullptr) return absl::InvalidArgumentError("no engine");
  if (auto src = engine->model().file().GetString("tokenizer.chat_template"); src.ok()) {
    auto tmpl = chat::ChatTemplate::Parse(*src);
    if (!tmpl.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model's chat template does not parse: ", tmpl.status().message()));
    }
    chat_template_ = std::move(*tmpl);
  }
  std::erase(names, std::string());
  if (names.empty()) names.push_back(engine->model_name());
  model_names_ = std::move(names);
  created_ = static_cast<int64_t>(std::time(nullptr));
  engine_.store(engine);
  return absl::OkStatus();
}

int Frontend::ContextLength() const {
  const engine::Engine* e = engine_.load();
  return std::min(e->config().max_context, e->model().config().context_length);
}

absl::Status Frontend::Authenticate(std::string_view authorization) const {
  if (options_.api_key.empty()) return absl::OkStatus();
  std::string_view key;
  if (absl::StartsWithIgnoreCase(std::string(authorization), "Bearer ")) {
    key = authorization.substr(7);
    while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
  }
  if (key.empty()) {
    return ApiStatus(absl::StatusCode::kUnauthenticated,
                     "missing API key: send 'Authorization: Bearer <key>'", "", "invalid_api_key");
  }
  if (!ConstantTimeEquals(key, options_.api_key)) {
    return ApiStatus(absl::StatusCode::kUnauthenticated, "incorrect API key provided", "",
                     "invalid_api_key");
  }
  return absl::OkStatus();
}

absl::Status Frontend::CheckServing() const {
  if (draining_.load()) return absl::UnavailableError("the server is shutting down");
  if (engine_.load() == nullptr) return absl::UnavailableError("the model is still loading");
  return absl::OkStatus();
}

absl::Status Frontend::CheckModel(std::string_view model) const {
  if (model.empty() || model == "default") return absl::OkStatus();
  for (const std::string& name : model_names_) {
    if (model == name) return absl::OkStatus();
  }
  return ApiStatus(absl::StatusCode::kNotFound,
                   absl::StrCat("the model '", std::string(model),
                                "' does not exist; this server has '", model_names_.front(), "'"),
                   "model", "model_not_found");
}

absl::StatusOr<std::string> Frontend::RenderChat(const std::vector<chat::ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  if (!chat_template_) return Invalid("the model has no chat template", "messages");
  const tokenizer::Tokenizer& tok = engine_.load()->tokenizer();
  chat::RenderExtras extras;
  extras.bos_token = tok.TokenToPiece(tok.bos_id(), true);
  extras.eos_token = tok.TokenToPiece(tok.eos_id(), true);
  absl::StatusOr<std::string> text =
      chat_template_->Render(messages, add_generation_prompt, extras);
  if (!text.ok()) return Invalid(std::string(text.status().message()), "messages");
  return text;
}

absl::StatusOr<std::vector<int32_t>> Frontend::ChatPrompt(
    const std::vector<chat::ChatMessage>& messages) const {
  absl::StatusOr<std::string> text = RenderChat(messages, /*add_generation_prompt=*/true);
  if (!text.ok()) return text.status();
  return engine_.load()->tokenizer().Encode(*text, /*add_special=*/true, /*parse_special=*/true);
}

absl::Status Frontend::CheckTokenIds(std::span<const int32_t> tokens,
                                     std::string_view param) const {
  const int32_t vocab = engine_.load()->tokenizer().vocab_size();
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab) {
      return Invalid(absl::StrCat("token id ", t, " is out of range [0, ", vocab, ")"), param);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const grammar::Grammar>> Frontend::CompileConstraint(
    const OutputConstraint& c) {
  using Kind = OutputConstraint::Kind;
  if (c.kind == Kind::kNone) return std::shared_ptr<const grammar::Grammar>();
  std::string gbnf;
  if (c.kind == Kind::kJsonObject) {
    gbnf = grammar::AnyJsonObjectGbnf();
  } else if (c.kind == Kind::kJsonSchema) {
    absl::StatusOr<std::string> converted = grammar::JsonSchemaToGbnf(c.text);
    if (!converted.ok()) {
      return Invalid(absl::StrCat(c.param, ": ", converted.status().message()), c.param);
    }
    gbnf = std::move(*converted);
  } else {
    gbnf = c.text;
  }
  absl::StatusOr<std::shared_ptr<const grammar::Grammar>> g = grammar::Grammar::Parse(gbnf);
  if (!g.ok()) return Invalid(absl::StrCat(c.param, ": ", g.status().message()), c.param);
  return *g;  // Grammar::Parse keeps recent texts compiled, with their mask caches warm
}

absl::StatusOr<Submission> Frontend::Submit(
    const std::vector<std::vector<int32_t>>& prompts, const GenerationParams& params,
    std::string_view prompt_param, std::optional<std::chrono::steady_clock::time_point> deadline) {
  using Clock = std::chrono::steady_clock;
  engine::Engine* eng = engine_.load();
  if (eng == nullptr) return CheckServing();
  const int ctx = ContextLength();
  const int cap = eng->config().max_tokens_cap;
  if (params.max_tokens && *params.max_tokens > cap) {
    return Invalid(
        absl::StrCat("max_tokens is ", *params.max_tokens, "; the server allows at most ", cap),
        "max_tokens");
  }
  if (params.max_tokens && *params.max_tokens < 1) {
    return Invalid("max_tokens must be at least 1", "max_tokens");
  }
  absl::StatusOr<std::shared_ptr<const grammar::Grammar>> grammar =
      CompileConstraint(params.constraint);
  if (!grammar.ok()) return grammar.status();
  std::vector<int> max_tokens;
  Submission sub;
  for (const std::vector<int32_t>& p : prompts) {
    const int len = static_cast<int>(p.size());
    if (len == 0) return Invalid("the prompt is empty", prompt_param);
    if (options_.max_prompt_tokens > 0 && len > options_.max_prompt_tokens) {
      return Invalid(absl::StrCat("the prompt has ", len, " tokens; this server accepts at most ",
                                  options_.max_prompt_tokens),
                     prompt_param, "context_length_exceeded");
    }
    if (len >= ctx) {
      return Invalid(absl::StrCat("this model's maximum context length is ", ctx,
                                  " tokens, but the prompt has ", len, " tokens"),
                     prompt_param, "context_length_exceeded");
    }
    const int mt =
        params.max_tokens ? static_cast<int>(*params.max_tokens) : std::min(cap, ctx - len);
    if (len + mt > ctx) {
      return Invalid(absl::StrCat("this model's maximum context length is ", ctx,
                                  " tokens; you requested ", len + mt, " tokens (", len, " in the ",
                                  std::string(prompt_param), ", ", mt, " in the completion)"),
                     prompt_param, "context_length_exceeded");
    }
    max_tokens.push_back(mt);
    sub.prompt_tokens += len;
  }

  std::shared_ptr<std::atomic<int>> counter = in_flight_;
  if (counter->fetch_add(1) >= options_.max_concurrent_requests) {
    counter->fetch_sub(1);
    return ApiStatus(absl::StatusCode::kResourceExhausted,
                     absl::StrCat("too many concurrent requests (limit ",
                                  options_.max_concurrent_requests, "); retry later"),
                     "", "rate_limit_exceeded");
  }
  sub.slot = std::shared_ptr<void>(nullptr, [counter](void*) { counter->fetch_sub(1); });

  if (options_.request_timeout_s > 0) {
    const Clock::time_point own =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(options_.request_timeout_s));
    if (!deadline || own < *deadline) deadline = own;
  }
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (int j = 0; j < params.n; ++j) {
      const int index = static_cast<int>(p) * params.n + j;
      engine::Request er;
      er.prompt = prompts[p];
      er.max_tokens = max_tokens[p];
      er.sampling = params.sampling;
      if (params.sampling.seed) er.sampling.seed = *params.sampling.seed + index;
      er.default_seed = RandomSeed();
      er.stop = params.stop;
      er.stop_at_eog = !params.ignore_eos;
      er.top_logprobs = params.logprobs;
      er.deadline = deadline;
      er.grammar = *grammar;
      absl::StatusOr<std::shared_ptr<engine::RequestStream>> stream = eng->Submit(std::move(er));
      if (!stream.ok()) {
        const absl::Status& s = stream.status();
        if (s.code() == absl::StatusCode::kResourceExhausted) {
          return ApiStatus(s.code(), std::string(s.message()), "", "rate_limit_exceeded");
        }
        return s;  // sub's destructor cancels the choices already queued
      }
      sub.streams.push_back(std::move(*stream));
    }
  }
  return sub;
}

}  // namespace loom::server::frontend
