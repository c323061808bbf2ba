#include "server/frontend/tools.h"

#include <cctype>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/frontend/frontend.h"

namespace loom::server::frontend {
namespace {

using json = nlohmann::ordered_json;

absl::Status Invalid(const std::string& message, std::string_view param) {
  return ApiStatus(absl::StatusCode::kInvalidArgument, message, param);
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}

json Parameters(const ToolFunction& f) {
  if (f.parameters_json.empty()) return json{{"type", "object"}};
  return json::parse(f.parameters_json, nullptr, /*allow_exceptions=*/false);
}

std::string NewCallId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrFormat("call_%016x%08x", rng(), rng() & 0xffffffffu);
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

absl::Status ToolSpec::Validate() const {
  std::set<std::string> names;
  for (const ToolFunction& f : functions) {
    if (!ValidName(f.name)) {
      return Invalid(absl::StrCat("tool function name '", f.name,
                                  "' must be 1-64 characters of a-z, A-Z, 0-9, _ and -"),
                     "tools");
    }
    if (!names.insert(f.name).second) {
      return Invalid(absl::StrCat("tool function '", f.name, "' is defined twice"), "tools");
    }
    json p = Parameters(f);
    if (p.is_discarded() || !p.is_object()) {
      return Invalid(
          absl::StrCat("the parameters of tool '", f.name, "' must be a JSON Schema object"),
          "tools");
    }
  }
  if (choice == Choice::kRequired && functions.empty()) {
    return Invalid("tool_choice 'required' needs at least one tool", "tool_choice");
  }
  if (choice == Choice::kFunction && !names.count(function)) {
    return Invalid(
        absl::StrCat("tool_choice names the function '", function, "', which is not in 'tools'"),
        "tool_choice");
  }
  return absl::OkStatus();
}

absl::Status PrepareToolMessages(const ToolSpec& spec, std::vector<chat::ChatMessage>* messages) {
  if (!spec.active()) return absl::OkStatus();
  json list = json::array();
  for (const ToolFunction& f : spec.functions) {
    if (spec.choice == ToolSpec::Choice::kFunction && f.name != spec.function) continue;
    json entry = {{"name", f.name}};
    if (!f.description.empty()) entry["description"] = f.description;
    entry["parameters"] = Parameters(f);
    list.push_back(std::move(entry));
  }
  const char* many = spec.parallel_tool_calls ? "one or more calls" : "exactly one call";
  std::string instructions = absl::StrCat(
      "You can call these tools (functions):\n", Dump(list),
      "\n\nReply with one JSON object only. ",
      "To call tools, reply {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments "
      "object>}]} with ",
      many, ".");
  if (spec.choice == ToolSpec::Choice::kAuto) {
    absl::StrAppend(&instructions,
                    " To answer without a tool, reply {\"response\": <your answer as a string>}.");
  } else if (spec.choice == ToolSpec::Choice::kFunction) {
    absl::StrAppend(&instructions, " Call the function '", spec.function, "'.");
  }

  std::vector<chat::ChatMessage> out;
  const bool has_system = !messages->empty() && (*messages)[0].role == "system";
  if (has_system) {
    chat::ChatMessage sys = (*messages)[0];
    sys.content = absl::StrCat(sys.content, sys.content.empty() ? "" : "\n\n", instructions);
    out.push_back(std::move(sys));
  } else {
    out.push_back(chat::ChatMessage{"system", instructions});
  }
  std::map<std::string, std::string> call_names;  // id -> function name, for tool results
  for (size_t i = has_system ? 1 : 0; i < messages->size(); ++i) {
    chat::ChatMessage m = (*messages)[i];
    if (m.role == "assistant" && !m.tool_calls.empty()) {
      json calls = json::array();
      for (const chat::ChatToolCall& c : m.tool_calls) {
        json args;
        if (c.arguments.IsString()) {
          args = json::parse(c.arguments.AsString(), nullptr, false);
          if (args.is_discarded()) args = c.arguments.AsString();
        } else {
          absl::StatusOr<std::string> text = c.arguments.ToJson();
          args = text.ok() ? json::parse(*text, nullptr, false) : json::object();
        }
        calls.push_back({{"name", c.name}, {"arguments", std::move(args)}});
        if (!c.id.empty()) call_names[c.id] = c.name;
      }
      out.push_back(chat::ChatMessage{"assistant", Dump({{"tool_calls", std::move(calls)}})});
    } else if (m.role == "assistant" && spec.choice == ToolSpec::Choice::kAuto) {
      out.push_back(chat::ChatMessage{"assistant", Dump({{"response", m.content}})});
    } else if (m.role == "tool") {
      json r = {{"tool_call_id", m.tool_call_id}};
      if (auto it = call_names.find(m.tool_call_id); it != call_names.end()) r["name"] = it->second;
      r["content"] = m.content;
      out.push_back(chat::ChatMessage{"tool", Dump({{"tool_response", std::move(r)}})});
    } else {
      m.tool_calls.clear();
      out.push_back(std::move(m));
    }
  }
  *messages = std::move(out);
  return absl::OkStatus();
}

std::string ToolOutputSchema(const ToolSpec& spec) {
  json variants = json::array();
  for (const ToolFunction& f : spec.functions) {
    if (spec.choice == ToolSpec::Choice::kFunction && f.name != spec.function) continue;
    variants.push_back(
        {{"type", "object"},
         {"properties", {{"name", {{"const", f.name}}}, {"arguments", Parameters(f)}}},
         {"required", {"name", "arguments"}},
         {"additionalProperties", false}});
  }
  const size_t offered = variants.size();
  json item = offered == 1 ? variants[0] : json{{"anyOf", variants}};
  // At most one call per offered function in a turn (one without parallel_tool_calls): a small
  // model left unbounded repeats the same call until max_tokens.
  json calls = {{"type", "array"},
                {"items", std::move(item)},
                {"minItems", 1},
                {"maxItems", spec.parallel_tool_calls ? offered : 1}};
  json call_object = {{"type", "object"},
                      {"properties", {{"tool_calls", std::move(calls)}}},
                      {"required", {"tool_calls"}},
                      {"additionalProperties", false}};
  if (spec.choice != ToolSpec::Choice::kAuto) return Dump(call_object);
  json response = {{"type", "object"},
                   {"properties", {{"response", {{"type", "string"}}}}},
                   {"required", {"response"}},
                   {"additionalProperties", false}};
  return Dump({{"anyOf", {std::move(call_object), std::move(response)}}});
}

absl::StatusOr<ToolOutput> ParseToolOutput(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the model's tool answer is not a complete JSON object");
  }
  ToolOutput out;
  if (auto r = j.find("response"); r != j.end() && r->is_string()) {
    out.content = r->get<std::string>();
    return out;
  }
  auto calls = j.find("tool_calls");
  if (calls == j.end() || !calls->is_array()) {
    return absl::InvalidArgumentError(
        "the model's tool answer has neither tool_calls nor response");
  }
  for (const json& c : *calls) {
    if (!c.is_object() || !c.contains("name") || !c["name"].is_string()) {
      return absl::InvalidArgumentError("a tool call in the model's answer has no name");
    }
    ToolCall call;
    call.id = NewCallId();
    call.name = c["name"].get<std::string>();
    call.arguments = c.contains("arguments") ? Dump(c["arguments"]) : "{}";
    out.calls.push_back(std::move(call));
  }
  return out;
}

}  // namespace loom::server::frontend
