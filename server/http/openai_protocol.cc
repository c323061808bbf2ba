#include "server/http/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::server::http {

using json = nlohmann::ordered_json;

ApiError InvalidRequest(std::string message, std::string param, std::string code) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

std::string ErrorBody(const ApiError& error) {
  json body = {{"error",
                {{"message", error.message},
                 {"type", error.type},
                 {"param", error.param.empty() ? json(nullptr) : json(error.param)},
                 {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

using MaybeError = std::optional<ApiError>;

std::string Num(double v) { return absl::StrFormat("%g", v); }

MaybeError TypeError(const std::string& name, const char* what) {
  return InvalidRequest(absl::StrCat("'", name, "' must be ", what), name);
}

MaybeError RangeError(const std::string& name, const std::string& range, double got) {
  return InvalidRequest(absl::StrCat("'", name, "' must be ", range, " (got ", Num(got), ")"),
                        name);
}

// The body as a JSON object, or a 400.
MaybeError ParseObject(std::string_view body, json* out) {
  *out = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) {
    return InvalidRequest("the request body is not valid JSON", "", "invalid_json");
  }
  if (!out->is_object()) return InvalidRequest("the request body must be a JSON object");
  return std::nullopt;
}

// The field, or nullptr when absent or null.
const json* Field(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

// An integer (integral floats such as 16.0 are accepted, as pydantic does) within [lo, hi].
MaybeError GetInt(const json& obj, const char* name, int64_t lo, int64_t hi,
                  std::optional<int64_t>* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  int64_t x = 0;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    x = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
            ? std::numeric_limits<int64_t>::max()
            : static_cast<int64_t>(u);
  } else if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float()) {
    const double d = v->get<double>();
    if (!(std::floor(d) == d && std::fabs(d) < 9e15)) return TypeError(name, "an integer");
    x = static_cast<int64_t>(d);
  } else {
    return TypeError(name, "an integer");
  }
  if (x < lo || x > hi) {
    return RangeError(name, absl::StrCat("between ", lo, " and ", hi), static_cast<double>(x));
  }
  *out = x;
  return std::nullopt;
}

enum class Bound { kClosed, kOpenLow };

MaybeError GetFloat(const json& obj, const char* name, double lo, double hi, Bound bound,
                    float* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return TypeError(name, "a number");
  const double d = v->get<double>();
  const bool low_ok = bound == Bound::kOpenLow ? d > lo : d >= lo;
  if (!(low_ok && d <= hi)) {
    const std::string range = bound == Bound::kOpenLow
                                  ? absl::StrCat("greater than ", Num(lo), " and at most ", Num(hi))
                                  : absl::StrCat("between ", Num(lo), " and ", Num(hi));
    return RangeError(name, range, d);
  }
  *out = static_cast<float>(d);
  return std::nullopt;
}

MaybeError GetBool(const json& obj, const char* name, bool* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return TypeError(name, "a boolean");
  *out = v->get<bool>();
  return std::nullopt;
}

MaybeError GetString(const json& obj, const char* name, std::string* out) {
  const json* v = Field(obj, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return TypeError(name, "a string");
  *out = v->get<std::string>();
  return std::nullopt;
}

#define LOOM_API_TRY(expr)                 \
  do {                                     \
    if (MaybeError e_ = (expr)) return e_; \
  } while (0)

// Token ids: an array of integers in [0, 2^31).
MaybeError GetTokenList(const json& v, const std::string& name, std::vector<int32_t>* out) {
  if (!v.is_array()) return TypeError(name, "an array of token ids");
  out->clear();
  for (const json& t : v) {
    if (!t.is_number_integer()) return TypeError(name, "an array of integer token ids");
    const int64_t id =
        t.is_number_unsigned()
            ? static_cast<int64_t>(std::min<uint64_t>(t.get<uint64_t>(), uint64_t{1} << 40))
            : t.get<int64_t>();
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return InvalidRequest(absl::StrCat("token id ", t.dump(), " in '", name, "' is out of range"),
                            name);
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

// Structured output: response_format (OpenAI), grammar (Loom), guided_json / guided_grammar (vLLM).
// At most one of them.
MaybeError ParseConstraint(const json& obj, frontend::OutputConstraint* c) {
  using Kind = frontend::OutputConstraint::Kind;
  auto set = [&](Kind kind, std::string text, const char* param) -> MaybeError {
    if (c->kind != Kind::kNone) {
      return InvalidRequest(absl::StrCat("'", param, "' cannot be combined with '", c->param,
                                         "': give one output constraint"),
                            param);
    }
    *c = {kind, std::move(text), param};
    return std::nullopt;
  };
  if (const json* rf = Field(obj, "response_format")) {
    if (!rf->is_object()) return TypeError("response_format", "an object");
    const json* type = Field(*rf, "type");
    if (type == nullptr || !type->is_string()) {
      return InvalidRequest("'response_format' needs a string 'type'", "response_format");
    }
    const std::string t = type->get<std::string>();
    if (t == "json_object") {
      LOOM_API_TRY(set(Kind::kJsonObject, "", "response_format"));
    } else if (t == "json_schema") {
      const json* js = Field(*rf, "json_schema");
      if (js == nullptr || !js->is_object()) {
        return InvalidRequest(
            "'response_format' of type 'json_schema' needs a 'json_schema' object",
            "response_format");
      }
      const json* schema = Field(*js, "schema");
      if (schema == nullptr) {
        // OpenAI: a missing schema means any JSON object.
        LOOM_API_TRY(set(Kind::kJsonObject, "", "response_format"));
      } else if (!schema->is_object() && !schema->is_boolean()) {
        return TypeError("response_format.json_schema.schema", "a JSON Schema object");
      } else {
        LOOM_API_TRY(set(Kind::kJsonSchema, schema->dump(), "response_format"));
      }
    } else if (t != "text") {
      return InvalidRequest(
          absl::StrCat("response_format type '", t,
                       "' is not supported; use text, json_object or json_schema"),
          "response_format");
    }
  }
  for (const char* name : {"grammar", "guided_grammar"}) {
    if (const json* g = Field(obj, name)) {
      if (!g->is_string()) return TypeError(name, "a string (a GBNF grammar)");
      LOOM_API_TRY(set(Kind::kGrammar, g->get<std::string>(), name));
    }
  }
  if (const json* g = Field(obj, "guided_json")) {
    if (g->is_string()) {
      LOOM_API_TRY(set(Kind::kJsonSchema, g->get<std::string>(), "guided_json"));
    } else if (g->is_object()) {
      LOOM_API_TRY(set(Kind::kJsonSchema, g->dump(), "guided_json"));
    } else {
      return TypeError("guided_json", "a JSON Schema");
    }
  }
  return std::nullopt;
}

// The sampling and output fields shared by chat and completions. `chat` selects the logprobs
// shape: chat has logprobs (bool) + top_logprobs (int), completions logprobs (int).
MaybeError ParseGenerationParams(const json& obj, bool chat, GenerationParams* p) {
  LOOM_API_TRY(GetString(obj, "model", &p->model));
  std::optional<int64_t> max_tokens, max_completion_tokens;
  LOOM_API_TRY(GetInt(obj, "max_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens));
  LOOM_API_TRY(GetInt(obj, "max_completion_tokens", 1, std::numeric_limits<int32_t>::max(),
                      &max_completion_tokens));
  p->max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;

  sampler::SamplingParams& s = p->sampling;
  LOOM_API_TRY(GetFloat(obj, "temperature", 0, 2, Bound::kClosed, &s.temperature));
  LOOM_API_TRY(GetFloat(obj, "top_p", 0, 1, Bound::kOpenLow, &s.top_p));
  LOOM_API_TRY(GetFloat(obj, "min_p", 0, 1, Bound::kClosed, &s.min_p));
  LOOM_API_TRY(GetFloat(obj, "presence_penalty", -2, 2, Bound::kClosed, &s.presence_penalty));
  LOOM_API_TRY(GetFloat(obj, "frequency_penalty", -2, 2, Bound::kClosed, &s.frequency_penalty));
  LOOM_API_TRY(GetFloat(obj, "repetition_penalty", 0, 10, Bound::kOpenLow, &s.repetition_penalty));
  std::optional<int64_t> top_k, seed, n;
  LOOM_API_TRY(GetInt(obj, "top_k", -1, std::numeric_limits<int32_t>::max(), &top_k));
  if (top_k) s.top_k = *top_k < 0 ? 0 : static_cast<int>(*top_k);  // vLLM: -1 = off
  LOOM_API_TRY(GetInt(obj, "seed", std::numeric_limits<int64_t>::min(),
                      std::numeric_limits<int64_t>::max(), &seed));
  if (seed) s.seed = static_cast<uint64_t>(*seed);
  LOOM_API_TRY(GetInt(obj, "n", 1, kMaxChoices, &n));
  if (n) p->n = static_cast<int>(*n);

  if (const json* stop = Field(obj, "stop")) {
    if (stop->is_string()) {
      p->stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > kMaxStopStrings) {
        return InvalidRequest(absl::StrCat("'stop' may hold at most ", kMaxStopStrings, " strings"),
                              "stop");
      }
      for (const json& s1 : *stop) {
        if (!s1.is_string()) return TypeError("stop", "a string or an array of strings");
        p->stop.push_back(s1.get<std::string>());
      }
    } else {
      return TypeError("stop", "a string or an array of strings");
    }
    std::erase(p->stop, std::string());  // an empty stop string would end every request at once
  }

  LOOM_API_TRY(GetBool(obj, "stream", &p->stream));
  if (const json* so = Field(obj, "stream_options")) {
    if (!so->is_object()) return TypeError("stream_options", "an object");
    LOOM_API_TRY(GetBool(*so, "include_usage", &p->include_usage));
  }
  LOOM_API_TRY(GetBool(obj, "ignore_eos", &p->ignore_eos));

  if (chat) {
    bool logprobs = false;
    std::optional<int64_t> top;
    LOOM_API_TRY(GetBool(obj, "logprobs", &logprobs));
    LOOM_API_TRY(GetInt(obj, "top_logprobs", 0, kMaxTopLogprobs, &top));
    if (top && !logprobs) {
      return InvalidRequest("'top_logprobs' requires 'logprobs' to be true", "top_logprobs");
    }
    if (logprobs) p->logprobs = static_cast<int>(top.value_or(0));
  } else {
    std::optional<int64_t> logprobs;
    LOOM_API_TRY(GetInt(obj, "logprobs", 0, kMaxTopLogprobs, &logprobs));
    if (logprobs) p->logprobs = static_cast<int>(*logprobs);
  }
  if (p->logprobs >= 0) s.top_logprobs = p->logprobs;
  return ParseConstraint(obj, &p->constraint);
}

// Chat content: a string, or a list of {"type":"text","text":...} parts (joined with "\n", as
// vLLM does); null only for assistant messages.
MaybeError ParseContent(const json* content, const std::string& role, std::string* out) {
  if (content == nullptr) {
    if (role == "assistant") return std::nullopt;
    return InvalidRequest(absl::StrCat("a '", role, "' message needs 'content'"), "messages");
  }
  if (content->is_string()) {
    *out = content->get<std::string>();
    return std::nullopt;
  }
  if (!content->is_array()) {
    return TypeError("messages.content", "a string or an array of content parts");
  }
  bool first = true;
  for (const json& part : *content) {
    if (!part.is_object()) return TypeError("messages.content", "an array of content parts");
    const json* type = Field(part, "type");
    if (type == nullptr || !type->is_string()) {
      return InvalidRequest("each content part needs a string 'type'", "messages.content");
    }
    if (type->get<std::string>() != "text") {
      return InvalidRequest(absl::StrCat("content part type '", type->get<std::string>(),
                                         "' is not supported; only 'text' is"),
                            "messages.content");
    }
    const json* text = Field(part, "text");
    if (text == nullptr || !text->is_string()) {
      return InvalidRequest("a text content part needs a string 'text'", "messages.content");
    }
    if (!first) *out += "\n";
    *out += text->get<std::string>();
    first = false;
  }
  return std::nullopt;
}

MaybeError ParseMessages(const json& obj, std::vector<chat::ChatMessage>* out) {
  const json* messages = Field(obj, "messages");
  if (messages == nullptr) return InvalidRequest("'messages' is required", "messages");
  if (!messages->is_array()) return TypeError("messages", "an array of messages");
  if (messages->empty()) return InvalidRequest("'messages' must not be empty", "messages");
  for (const json& m : *messages) {
    if (!m.is_object()) return TypeError("messages", "an array of message objects");
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) {
      return InvalidRequest("each message needs a string 'role'", "messages.role");
    }
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for the system role
    if (r != "system" && r != "user" && r != "assistant" && r != "tool") {
      return InvalidRequest(
          absl::StrCat("unsupported role '", r, "'; use system, user, assistant or tool"),
          "messages.role");
    }
    chat::ChatMessage msg{r, ""};
    LOOM_API_TRY(ParseContent(Field(m, "content"), r, &msg.content));
    if (r == "tool") {
      LOOM_API_TRY(GetString(m, "tool_call_id", &msg.tool_call_id));
      if (msg.tool_call_id.empty()) {
        return InvalidRequest("a 'tool' message needs 'tool_call_id'", "messages.tool_call_id");
      }
    }
    if (const json* calls = Field(m, "tool_calls"); calls != nullptr && r == "assistant") {
      if (!calls->is_array()) return TypeError("messages.tool_calls", "an array");
      for (const json& c : *calls) {
        const json* fn = c.is_object() ? Field(c, "function") : nullptr;
        const json* name = fn != nullptr && fn->is_object() ? Field(*fn, "name") : nullptr;
        if (name == nullptr || !name->is_string()) {
          return InvalidRequest("each tool call needs 'function.name'", "messages.tool_calls");
        }
        chat::ChatToolCall call;
        call.name = name->get<std::string>();
        if (const json* id = Field(c, "id"); id != nullptr && id->is_string()) {
          call.id = id->get<std::string>();
        }
        const json* args = Field(*fn, "arguments");
        call.arguments = args == nullptr     ? std::string("{}")
                         : args->is_string() ? args->get<std::string>()
                                             : args->dump();
        msg.tool_calls.push_back(std::move(call));
      }
    }
    out->push_back(std::move(msg));
  }
  return std::nullopt;
}

// tools, tool_choice, parallel_tool_calls.
MaybeError ParseTools(const json& obj, frontend::ToolSpec* spec) {
  if (const json* tools = Field(obj, "tools")) {
    if (!tools->is_array()) return TypeError("tools", "an array of tools");
    for (const json& t : *tools) {
      const json* type = t.is_object() ? Field(t, "type") : nullptr;
      if (type == nullptr || *type != "function") {
        return InvalidRequest("each tool must be {\"type\": \"function\", \"function\": {...}}",
                              "tools");
      }
      const json* fn = Field(t, "function");
      if (fn == nullptr || !fn->is_object()) {
        return InvalidRequest("each tool needs a 'function' object", "tools");
      }
      frontend::ToolFunction f;
      LOOM_API_TRY(GetString(*fn, "name", &f.name));
      LOOM_API_TRY(GetString(*fn, "description", &f.description));
      if (const json* params = Field(*fn, "parameters")) {
        if (!params->is_object()) return TypeError("tools.function.parameters", "a JSON Schema");
        f.parameters_json = params->dump();
      }
      spec->functions.push_back(std::move(f));
    }
  }
  using Choice = frontend::ToolSpec::Choice;
  if (const json* choice = Field(obj, "tool_choice")) {
    if (choice->is_string()) {
      const std::string c = choice->get<std::string>();
      if (c == "auto") {
        spec->choice = Choice::kAuto;
      } else if (c == "none") {
        spec->choice = Choice::kNone;
      } else if (c == "required") {
        spec->choice = Choice::kRequired;
      } else {
        return InvalidRequest(
            absl::StrCat("tool_choice '", c, "' is not one of auto, none, required"),
            "tool_choice");
      }
    } else if (choice->is_object()) {
      const json* fn = Field(*choice, "function");
      const json* name = fn != nullptr && fn->is_object() ? Field(*fn, "name") : nullptr;
      if (name == nullptr || !name->is_string()) {
        return InvalidRequest(
            "tool_choice needs {\"type\": \"function\", \"function\": "
            "{\"name\": ...}}",
            "tool_choice");
      }
      spec->choice = Choice::kFunction;
      spec->function = name->get<std::string>();
    } else {
      return TypeError("tool_choice", "a string or an object");
    }
  }
  LOOM_API_TRY(GetBool(obj, "parallel_tool_calls", &spec->parallel_tool_calls));
  if (absl::Status st = spec->Validate(); !st.ok()) {
    return InvalidRequest(std::string(st.message()), frontend::StatusParam(st));
  }
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> ParseChatCompletionRequest(std::string_view body,
                                                   ChatCompletionRequest* out) {
  json obj;
  LOOM_API_TRY(ParseObject(body, &obj));
  LOOM_API_TRY(ParseMessages(obj, &out->messages));
  LOOM_API_TRY(ParseTools(obj, &out->tools));
  LOOM_API_TRY(ParseGenerationParams(obj, /*chat=*/true, &out->params));
  if (out->tools.active() &&
      out->params.constraint.kind != frontend::OutputConstraint::Kind::kNone) {
    return InvalidRequest(
        absl::StrCat("'tools' cannot be combined with '", out->params.constraint.param, "'"),
        "tools");
  }
  return std::nullopt;
}

std::optional<ApiError> ParseCompletionRequest(std::string_view body, CompletionRequest* out) {
  json obj;
  LOOM_API_TRY(ParseObject(body, &obj));
  const json* prompt = Field(obj, "prompt");
  if (prompt == nullptr) return InvalidRequest("'prompt' is required", "prompt");
  constexpr char kPromptTypes[] =
      "a string, an array of strings, an array of token ids or an array of token id arrays";
  if (prompt->is_string()) {
    out->prompts.push_back({prompt->get<std::string>(), {}, false});
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
    PromptInput p;
    p.is_tokens = true;
    LOOM_API_TRY(GetTokenList(*prompt, "prompt", &p.tokens));
    out->prompts.push_back(std::move(p));
  } else if (prompt->is_array() && !prompt->empty()) {
    for (const json& item : *prompt) {
      if (item.is_string()) {
        out->prompts.push_back({item.get<std::string>(), {}, false});
      } else if (item.is_array()) {
        PromptInput p;
        p.is_tokens = true;
        LOOM_API_TRY(GetTokenList(item, "prompt", &p.tokens));
        out->prompts.push_back(std::move(p));
      } else {
        return TypeError("prompt", kPromptTypes);
      }
    }
  } else if (prompt->is_array()) {
    return InvalidRequest("'prompt' must not be empty", "prompt");
  } else {
    return TypeError("prompt", kPromptTypes);
  }
  LOOM_API_TRY(ParseGenerationParams(obj, /*chat=*/false, &out->params));
  if (out->prompts.size() * out->params.n > kMaxChoices) {
    return InvalidRequest(absl::StrCat("prompts x n must be at most ", kMaxChoices), "n");
  }
  return std::nullopt;
}

std::optional<ApiError> ParseTokenizeRequest(std::string_view body, TokenizeRequest* out) {
  json obj;
  LOOM_API_TRY(ParseObject(body, &obj));
  LOOM_API_TRY(GetString(obj, "model", &out->model));
  LOOM_API_TRY(GetBool(obj, "add_special_tokens", &out->add_special_tokens));
  LOOM_API_TRY(GetBool(obj, "add_generation_prompt", &out->add_generation_prompt));
  if (Field(obj, "messages") != nullptr) return ParseMessages(obj, &out->messages);
  std::string prompt;
  if (Field(obj, "prompt") == nullptr) {
    return InvalidRequest("'prompt' or 'messages' is required", "prompt");
  }
  LOOM_API_TRY(GetString(obj, "prompt", &prompt));
  out->prompt = std::move(prompt);
  return std::nullopt;
}

std::optional<ApiError> ParseDetokenizeRequest(std::string_view body, DetokenizeRequest* out) {
  json obj;
  LOOM_API_TRY(ParseObject(body, &obj));
  LOOM_API_TRY(GetString(obj, "model", &out->model));
  const json* tokens = Field(obj, "tokens");
  if (tokens == nullptr) return InvalidRequest("'tokens' is required", "tokens");
  return GetTokenList(*tokens, "tokens", &out->tokens);
}

}  // namespace loom::server::http
