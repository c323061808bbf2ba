// chat_template_render: renders a chat template with a JSON context, for comparing the engine
// with Python's jinja2 (compare_jinja2.py).
//
//   chat_template_render TEMPLATE.jinja < context.json
//     prints the rendering to stdout (exit 0), or "error: <message>" to stderr (exit 1).
//   chat_template_render --batch < jobs.json
//     jobs.json is [{"template": PATH or "source": TEXT, "context": {...}, "options": {...}}, ...];
//     options may set trim_blocks, lstrip_blocks, keep_trailing_newline. Prints a JSON array of
//     {"ok": true, "output": "..."} / {"ok": false, "error": "..."}, one per job.

#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "engine/chat_template/chat_template.h"
#include "nlohmann/json.hpp"

namespace {

using loom::chat::ChatTemplate;
using loom::chat::Value;
using loom::chat::ValueDict;
using loom::chat::ValueList;
using Json = nlohmann::ordered_json;

Value ToValue(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return Value::None();
    case Json::value_t::boolean:
      return Value(j.get<bool>());
    case Json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case Json::value_t::number_unsigned:
      return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case Json::value_t::number_float:
      return Value(j.get<double>());
    case Json::value_t::string:
      return Value(j.get<std::string>());
    case Json::value_t::array: {
      ValueList list;
      for (const Json& item : j) list.push_back(ToValue(item));
      return Value(std::move(list));
    }
    case Json::value_t::object: {
      ValueDict dict;
      for (const auto& [key, item] : j.items()) dict.Set(key, ToValue(item));
      return Value(std::move(dict));
    }
    default:
      return Value();
  }
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

absl::StatusOr<std::string> Render(const std::string& source, const Json& context,
                                   const ChatTemplate::Options& options) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source, options);
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->RenderWithContext(ToValue(context));
}

// A batch job: {"template": PATH} or {"source": TEXT}, "context", optional "options" with
// trim_blocks / lstrip_blocks / keep_trailing_newline.
absl::StatusOr<std::string> RenderJob(const Json& job) {
  std::string source;
  if (job.contains("source")) {
    source = job["source"].get<std::string>();
  } else if (!ReadFile(job.value("template", ""), &source)) {
    return absl::NotFoundError("cannot read template " + job.value("template", ""));
  }
  ChatTemplate::Options options;
  if (job.contains("options") && job["options"].is_object()) {
    const Json& o = job["options"];
    options.trim_blocks = o.value("trim_blocks", options.trim_blocks);
    options.lstrip_blocks = o.value("lstrip_blocks", options.lstrip_blocks);
    options.keep_trailing_newline = o.value("keep_trailing_newline", options.keep_trailing_newline);
  }
  return Render(source, job.contains("context") ? job["context"] : Json::object(), options);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: chat_template_render TEMPLATE < context.json\n"
                 "       chat_template_render --batch < jobs.json\n";
    return 2;
  }
  const std::string input((std::istreambuf_iterator<char>(std::cin)),
                          std::istreambuf_iterator<char>());
  const Json parsed = Json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    std::cerr << "error: stdin is not valid JSON\n";
    return 2;
  }
  const std::string arg = argv[1];
  if (arg != "--batch") {
    std::string source;
    if (!ReadFile(arg, &source)) {
      std::cerr << "error: cannot read template " << arg << "\n";
      return 1;
    }
    absl::StatusOr<std::string> out = Render(source, parsed, ChatTemplate::Options());
    if (!out.ok()) {
      std::cerr << "error: " << out.status().message() << "\n";
      return 1;
    }
    std::cout << *out;
    return 0;
  }
  Json results = Json::array();
  for (const Json& job : parsed) {
    Json result;
    absl::StatusOr<std::string> out = RenderJob(job);
    result["ok"] = out.ok();
    if (out.ok()) {
      result["output"] = *out;
    } else {
      result["error"] = std::string(out.status().message());
    }
    results.push_back(std::move(result));
  }
  std::cout << results.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
  return 0;
}
