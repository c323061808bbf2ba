// JSON Schema -> GBNF (the subset json_schema.h lists).
#include "engine/grammar/json_schema.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/json_schema_internal.h"
#include "nlohmann/json.hpp"

namespace loom::grammar {
namespace {

using Json = nlohmann::ordered_json;

// Rules any schema may use, with the rules each needs.
struct BaseRule {
  const char* body;
  std::vector<const char*> needs;
};
const std::map<std::string, BaseRule>& BaseRules() {
  static const auto* rules = new std::map<std::string, BaseRule>{
      {"ws", {R"(| " " | "\n" [ \t]{0,20})", {}}},
      {"char", {R"([^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}))", {}}},
      {"string", {R"("\"" char* "\"")", {"char"}}},
      {"integer", {R"("-"? ("0" | [1-9] [0-9]{0,15}))", {}}},
      {"number",
       {R"("-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?)", {}}},
      {"boolean", {R"("true" | "false")", {}}},
      {"null", {R"("null")", {}}},
      {"value",
       {"object | array | string | number | boolean | null",
        {"object", "array", "string", "number", "boolean", "null"}}},
      {"object",
       {R"("{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}")",
        {"ws", "string", "value"}}},
      {"array", {R"("[" ws ( value ws ( "," ws value ws )* )? "]")", {"ws", "value"}}},
      {"date",
       {R"([0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ))", {}}},
      {"time",
       {R"(( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? )"
        R"(( [zZ] | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ))",
        {}}},
      {"date-time", {R"(date [tT] time)", {"date", "time"}}},
      {"uuid",
       {R"([0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" )"
        R"([0-9a-fA-F]{12})",
        {}}},
  };
  return *rules;
}

const std::set<std::string>& Annotations() {
  static const auto* s =
      new std::set<std::string>{"title",   "description", "$schema",    "$id",      "$comment",
                                "default", "examples",    "deprecated", "readOnly", "writeOnly"};
  return *s;
}

const std::set<std::string>& Supported() {
  static const auto* s = new std::set<std::string>{"type",
                                                   "properties",
                                                   "required",
                                                   "additionalProperties",
                                                   "enum",
                                                   "const",
                                                   "items",
                                                   "prefixItems",
                                                   "minItems",
                                                   "maxItems",
                                                   "minLength",
                                                   "maxLength",
                                                   "pattern",
                                                   "format",
                                                   "minimum",
                                                   "maximum",
                                                   "exclusiveMinimum",
                                                   "exclusiveMaximum",
                                                   "anyOf",
                                                   "oneOf",
                                                   "allOf",
                                                   "$ref",
                                                   "$defs",
                                                   "definitions"};
  return *s;
}

constexpr int kMaxItems = 1000;
constexpr int kMaxLength = 10000;
constexpr double kMaxIntegerBound = 1e15;

std::string PathText(const std::string& path) { return path.empty() ? "/" : path; }

std::string PointerEscape(const std::string& key) {
  std::string out;
  for (const char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// A rule-name piece from free text: [a-zA-Z0-9] runs joined by '-', at most 32 characters.
std::string NamePiece(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (ok) {
      out += c;
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
    if (out.size() >= 32) break;
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "x" : out;
}

class Converter {
 public:
  // Rule names: every rule made for a schema is named after its `hint` (its place in the
  // document); children get longer hints, so only the top schema's own rule is named "root".
  explicit Converter(const Json& root) : root_(root) {
    for (const auto& [name, rule] : BaseRules()) names_.insert(name);
    refs_["#"] = "root";
  }

  absl::StatusOr<std::string> Run() {
    LOOM_ASSIGN_OR_RETURN(const std::string expr, Visit(root_, "", "root"));
    std::string out;
    if (expr != "root") absl::StrAppend(&out, "root ::= ", expr, "\n");
    for (const auto& [name, body] : rules_) absl::StrAppend(&out, name, " ::= ", body, "\n");
    return out;
  }

 private:
  absl::Status Error(const std::string& path, const std::string& msg) const {
    return absl::InvalidArgumentError(absl::StrCat(msg, " at ", PathText(path)));
  }

  // Adds base rule `name` (and what it needs) once; returns the name.
  std::string Use(const std::string& name) {
    if (used_.insert(name).second) {
      const BaseRule& r = BaseRules().at(name);
      rules_.emplace_back(name, r.body);
      for (const char* need : r.needs) Use(need);
    }
    return name;
  }

  std::string Reserve(const std::string& hint) {
    std::string name = hint;
    for (int i = 2; names_.count(name); ++i) name = absl::StrCat(hint, "-", i);
    names_.insert(name);
    rules_.emplace_back(name, "");
    return name;
  }
  void Define(const std::string& name, std::string body) {
    for (auto& [n, b] : rules_) {
      if (n == name) b = std::move(body);
    }
  }
  std::string AddRule(const std::string& hint, std::string body) {
    const std::string name = Reserve(hint);
    Define(name, std::move(body));
    return name;
  }

  absl::StatusOr<std::string> Visit(const Json& schema, const std::string& path,
                                    const std::string& hint) {
    if (schema.is_boolean()) {
      if (schema.get<bool>()) return Use("value");
      return Error(path, "the schema 'false' matches nothing");
    }
    if (!schema.is_object()) return Error(path, "a schema must be an object or a boolean");
    std::vector<std::string> constraints;  // non-annotation keywords present
    for (const auto& [key, value] : schema.items()) {
      if (Annotations().count(key)) continue;
      if (!Supported().count(key)) {
        return Error(path, absl::StrCat("unsupported JSON Schema keyword '", key, "'"));
      }
      if (key != "$defs" && key != "definitions") constraints.push_back(key);
    }
    auto alone = [&](const std::string& kw) -> absl::Status {
      for (const std::string& other : constraints) {
        if (other != kw) {
          return Error(path,
                       absl::StrCat("keyword '", other, "' beside '", kw, "' is not supported"));
        }
      }
      return absl::OkStatus();
    };
    if (schema.contains("$ref")) {
      LOOM_RETURN_IF_ERROR(alone("$ref"));
      return Ref(schema["$ref"], path);
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!schema.contains(kw)) continue;
      LOOM_RETURN_IF_ERROR(alone(kw));
      const Json& list = schema[kw];
      if (!list.is_array() || list.empty()) {
        return Error(path, absl::StrCat("'", kw, "' must be a non-empty array"));
      }
      std::vector<std::string> alts;
      for (size_t i = 0; i < list.size(); ++i) {
        LOOM_ASSIGN_OR_RETURN(std::string alt, Visit(list[i], absl::StrCat(path, "/", kw, "/", i),
                                                     absl::StrCat(hint, "-", i + 1)));
        alts.push_back(std::move(alt));
      }
      return AddRule(hint, absl::StrJoin(alts, " | "));
    }
    if (schema.contains("allOf")) {
      LOOM_RETURN_IF_ERROR(alone("allOf"));
      const Json& list = schema["allOf"];
      if (!list.is_array() || list.size() != 1) {
        return Error(path, "'allOf' is supported with exactly one schema");
      }
      return Visit(list[0], path + "/allOf/0", hint);
    }
    if (schema.contains("const")) return GbnfLiteral(schema["const"].dump());
    if (schema.contains("enum")) {
      const Json& values = schema["enum"];
      if (!values.is_array() || values.empty()) {
        return Error(path, "'enum' must be a non-empty array");
      }
      std::vector<std::string> alts;
      for (const Json& v : values) alts.push_back(GbnfLiteral(v.dump()));
      return AddRule(hint, absl::StrJoin(alts, " | "));
    }

    std::vector<std::string> types;
    if (schema.contains("type")) {
      const Json& t = schema["type"];
      if (t.is_string()) {
        types.push_back(t.get<std::string>());
      } else if (t.is_array() && !t.empty()) {
        for (const Json& x : t) {
          if (!x.is_string()) return Error(path, "'type' must be a string or a list of strings");
          types.push_back(x.get<std::string>());
        }
      } else {
        return Error(path, "'type' must be a string or a list of strings");
      }
    } else {
      auto has_any = [&](std::initializer_list<const char*> kws) {
        for (const char* k : kws) {
          if (schema.contains(k)) return true;
        }
        return false;
      };
      if (has_any({"properties", "required", "additionalProperties"})) types.push_back("object");
      if (has_any({"items", "prefixItems", "minItems", "maxItems"})) types.push_back("array");
      if (has_any({"minLength", "maxLength", "pattern", "format"})) types.push_back("string");
      if (has_any({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})) {
        types.push_back("number");
      }
      if (types.empty()) return Use("value");
    }
    std::vector<std::string> alts;
    for (const std::string& t : types) {
      LOOM_ASSIGN_OR_RETURN(
          std::string alt,
          VisitType(schema, t, path, types.size() > 1 ? absl::StrCat(hint, "-", t) : hint));
      alts.push_back(std::move(alt));
    }
    if (alts.size() == 1) return alts[0];
    return AddRule(hint, absl::StrJoin(alts, " | "));
  }

  absl::StatusOr<std::string> VisitType(const Json& schema, const std::string& type,
                                        const std::string& path, const std::string& hint) {
    if (type == "null") return Use("null");
    if (type == "boolean") return Use("boolean");
    if (type == "integer") return Integer(schema, path, hint);
    if (type == "number") return Number(schema, path, hint);
    if (type == "string") return String(schema, path, hint);
    if (type == "array") return Array(schema, path, hint);
    if (type == "object") return Object(schema, path, hint);
    return Error(path, absl::StrCat("unknown type '", type, "'"));
  }

  absl::StatusOr<std::string> Ref(const Json& ref_json, const std::string& path) {
    if (!ref_json.is_string()) return Error(path, "'$ref' must be a string");
    const std::string ref = ref_json.get<std::string>();
    if (auto it = refs_.find(ref); it != refs_.end()) return it->second;
    if (ref.empty() || ref[0] != '#') {
      return Error(path,
                   absl::StrCat("only local references (#/...) are supported, not '", ref, "'"));
    }
    const Json* target = nullptr;
    try {
      const Json::json_pointer ptr(ref.substr(1));
      if (root_.contains(ptr)) target = &root_.at(ptr);
    } catch (const nlohmann::json::exception&) {
      // Not a valid pointer: reported below.
    }
    if (target == nullptr) return Error(path, absl::StrCat("'$ref' target '", ref, "' not found"));
    std::string hint = NamePiece(ref.substr(ref.rfind('/') + 1));
    if (hint == "root") hint = "root-def";
    const std::string name = Reserve(hint);
    refs_[ref] = name;
    LOOM_ASSIGN_OR_RETURN(std::string body, Visit(*target, ref.substr(1), name + "-v"));
    Define(name, std::move(body));
    return name;
  }

  // An optional numeric keyword.
  absl::StatusOr<std::optional<double>> Bound(const Json& schema, const char* kw,
                                              const std::string& path) {
    if (!schema.contains(kw)) return std::optional<double>();
    const Json& v = schema[kw];
    if (v.is_boolean()) {
      return Error(path, absl::StrCat("boolean '", kw, "' (draft 4) is not supported"));
    }
    if (!v.is_number()) return Error(path, absl::StrCat("'", kw, "' must be a number"));
    return std::optional<double>(v.get<double>());
  }

  absl::StatusOr<std::string> Integer(const Json& schema, const std::string& path,
                                      const std::string& hint) {
    LOOM_ASSIGN_OR_RETURN(auto min, Bound(schema, "minimum", path));
    LOOM_ASSIGN_OR_RETURN(auto max, Bound(schema, "maximum", path));
    LOOM_ASSIGN_OR_RETURN(auto xmin, Bound(schema, "exclusiveMinimum", path));
    LOOM_ASSIGN_OR_RETURN(auto xmax, Bound(schema, "exclusiveMaximum", path));
    if (!min && !max && !xmin && !xmax) return Use("integer");
    std::optional<double> lo, hi;
    if (min) lo = std::ceil(*min);
    if (xmin) lo = std::max(lo.value_or(-INFINITY), std::floor(*xmin) + 1);
    if (max) hi = std::floor(*max);
    if (xmax) hi = std::min(hi.value_or(INFINITY), std::ceil(*xmax) - 1);
    for (const auto& b : {lo, hi}) {
      if (b && std::fabs(*b) > kMaxIntegerBound) {
        return Error(path, "integer bounds beyond +-10^15 are not supported");
      }
    }
    if (lo && hi && *lo > *hi) return Error(path, "no integer lies between minimum and maximum");
    std::optional<int64_t> ilo, ihi;
    if (lo) ilo = static_cast<int64_t>(*lo);
    if (hi) ihi = static_cast<int64_t>(*hi);
    return AddRule(hint, internal::IntegerRangeGbnf(ilo, ihi));
  }

  absl::StatusOr<std::string> Number(const Json& schema, const std::string& path,
                                     const std::string& hint) {
    for (const char* kw : {"maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
      if (schema.contains(kw)) {
        return Error(path, absl::StrCat("'", kw,
                                        "' on a number (not an integer) is not "
                                        "supported"));
      }
    }
    LOOM_ASSIGN_OR_RETURN(auto min, Bound(schema, "minimum", path));
    if (!min) return Use("number");
    if (*min != 0) {
      return Error(path, "'minimum' on a number (not an integer) is supported only as 0");
    }
    return AddRule(hint,
                   R"(("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?)");
  }

  absl::StatusOr<int> Count(const Json& schema, const char* kw, const std::string& path, int limit,
                            int fallback) {
    if (!schema.contains(kw)) return fallback;
    const Json& v = schema[kw];
    if (!v.is_number_integer() || v.get<int64_t>() < 0) {
      return Error(path, absl::StrCat("'", kw, "' must be a non-negative integer"));
    }
    if (v.get<int64_t>() > limit) {
      return Error(path, absl::StrCat("'", kw, "' over ", limit, " is not supported"));
    }
    return static_cast<int>(v.get<int64_t>());
  }

  absl::StatusOr<std::string> String(const Json& schema, const std::string& path,
                                     const std::string& hint) {
    const bool has_len = schema.contains("minLength") || schema.contains("maxLength");
    const bool has_pattern = schema.contains("pattern");
    const bool has_format = schema.contains("format");
    if (has_len + has_pattern + has_format > 1) {
      return Error(path, "combining minLength/maxLength, pattern and format is not supported");
    }
    const std::string quote = R"("\"")";
    if (has_pattern) {
      if (!schema["pattern"].is_string()) return Error(path, "'pattern' must be a string");
      absl::StatusOr<std::string> body =
          internal::RegexToGbnf(schema["pattern"].get<std::string>());
      if (!body.ok()) return Error(path, std::string(body.status().message()));
      return AddRule(hint, absl::StrCat(quote, " ", *body, " ", quote));
    }
    if (has_format) {
      const Json& f = schema["format"];
      const std::string format = f.is_string() ? f.get<std::string>() : "";
      if (format != "date" && format != "time" && format != "date-time" && format != "uuid") {
        return Error(path, absl::StrCat("unsupported format '", format,
                                        "' (supported: date, time, date-time, uuid)"));
      }
      return AddRule(hint, absl::StrCat(quote, " ", Use(format), " ", quote));
    }
    if (has_len) {
      LOOM_ASSIGN_OR_RETURN(const int min, Count(schema, "minLength", path, kMaxLength, 0));
      LOOM_ASSIGN_OR_RETURN(const int max, Count(schema, "maxLength", path, kMaxLength, -1));
      if (max >= 0 && max < min) return Error(path, "maxLength is below minLength");
      Use("char");
      const std::string rep =
          max < 0 ? absl::StrCat("{", min, ",}") : absl::StrCat("{", min, ",", max, "}");
      return AddRule(hint, absl::StrCat(quote, " char", rep, " ", quote));
    }
    return Use("string");
  }

  absl::StatusOr<std::string> Array(const Json& schema, const std::string& path,
                                    const std::string& hint) {
    Use("ws");
    LOOM_ASSIGN_OR_RETURN(const int min, Count(schema, "minItems", path, kMaxItems, 0));
    LOOM_ASSIGN_OR_RETURN(int max, Count(schema, "maxItems", path, kMaxItems, -1));
    std::vector<std::string> prefix;
    if (schema.contains("prefixItems")) {
      const Json& p = schema["prefixItems"];
      if (!p.is_array()) return Error(path, "'prefixItems' must be an array");
      for (size_t j = 0; j < p.size(); ++j) {
        LOOM_ASSIGN_OR_RETURN(std::string e, Visit(p[j], absl::StrCat(path, "/prefixItems/", j),
                                                   absl::StrCat(hint, "-", j)));
        prefix.push_back(std::move(e));
      }
    }
    const int k = static_cast<int>(prefix.size());
    std::string item;
    if (schema.contains("items") && schema["items"].is_boolean() && !schema["items"].get<bool>()) {
      max = max < 0 ? k : std::min(max, k);
    } else if (schema.contains("items")) {
      LOOM_ASSIGN_OR_RETURN(item, Visit(schema["items"], path + "/items", hint + "-item"));
    } else {
      item = Use("value");
    }
    if (max >= 0 && min > max) return Error(path, "minItems is above the items allowed");
    const std::string comma = R"("," ws )";
    auto el = [&](int j) {
      return absl::StrCat(j > 0 ? comma : "", j < k ? prefix[j] : item, " ws");
    };
    std::vector<std::string> seq;
    // Required positions: each prefix item, then the rest as a repetition.
    const int lead = std::min(min, std::max(k, 1));
    for (int j = 0; j < lead; ++j) seq.push_back(el(j));
    if (min > lead) seq.push_back(absl::StrCat("(", comma, item, " ws){", min - lead, "}"));
    // Optional positions: the prefix items left, nested, then the uniform tail.
    const int u0 = std::max(min, k);
    std::string tail;
    if (!item.empty()) {
      if (max < 0) {
        tail = u0 > 0 ? absl::StrCat("(", comma, item, " ws)*")
                      : absl::StrCat("(", item, " ws (", comma, item, " ws)*)?");
      } else if (max > u0) {
        tail = u0 > 0 ? absl::StrCat("(", comma, item, " ws){0,", max - u0, "}")
                      : absl::StrCat("(", item, " ws (", comma, item, " ws){0,", max - 1, "})?");
      }
    }
    for (int j = std::min(k, max < 0 ? k : max) - 1; j >= min; --j) {
      tail = absl::StrCat("(", el(j), tail.empty() ? "" : " ", tail, ")?");
    }
    if (!tail.empty()) seq.push_back(tail);
    return AddRule(hint, absl::StrCat(R"("[" ws )", absl::StrJoin(seq, " "), seq.empty() ? "" : " ",
                                      R"("]")"));
  }

  absl::StatusOr<std::string> Object(const Json& schema, const std::string& path,
                                     const std::string& hint) {
    const Json* props = nullptr;
    if (schema.contains("properties")) {
      props = &schema["properties"];
      if (!props->is_object()) return Error(path, "'properties' must be an object");
    }
    std::set<std::string> required;
    if (schema.contains("required")) {
      const Json& r = schema["required"];
      if (!r.is_array()) return Error(path, "'required' must be an array of strings");
      for (const Json& name : r) {
        if (!name.is_string()) return Error(path, "'required' must be an array of strings");
        if (props == nullptr || !props->contains(name.get<std::string>())) {
          return Error(path, absl::StrCat("required property '", name.get<std::string>(),
                                          "' is not in 'properties'"));
        }
        required.insert(name.get<std::string>());
      }
    }
    // Further keys: a value rule, or empty for none.
    std::string extra;
    if (schema.contains("additionalProperties")) {
      const Json& a = schema["additionalProperties"];
      if (a.is_boolean()) {
        if (a.get<bool>()) extra = Use("value");
      } else {
        LOOM_ASSIGN_OR_RETURN(extra, Visit(a, path + "/additionalProperties", hint + "-extra"));
      }
    } else if (props == nullptr) {
      return Use("object");  // no properties named: any object
    }
    Use("ws");
    std::vector<std::pair<std::string, bool>> kvs;  // rule, required
    if (props != nullptr) {
      for (const auto& [name, sub] : props->items()) {
        const std::string piece = absl::StrCat(hint, "-", NamePiece(name));
        LOOM_ASSIGN_OR_RETURN(
            std::string value,
            Visit(sub, absl::StrCat(path, "/properties/", PointerEscape(name)), piece));
        kvs.emplace_back(AddRule(piece + "-kv", absl::StrCat(GbnfLiteral(Json(name).dump()),
                                                             R"( ws ":" ws )", value, " ws")),
                         required.count(name) > 0);
      }
    }
    std::string kvx;
    if (!extra.empty()) {
      kvx =
          AddRule(hint + "-extra-kv", absl::StrCat(Use("string"), R"( ws ":" ws )", extra, " ws"));
    }
    // Rest(i, first): the properties from i on, `first` when none was written yet (no comma).
    const std::string comma = R"("," ws )";
    std::map<std::pair<size_t, bool>, std::string> memo;
    std::function<std::string(size_t, bool)> rest = [&](size_t i, bool first) -> std::string {
      if (auto it = memo.find({i, first}); it != memo.end()) return it->second;
      std::string out;
      if (i == kvs.size()) {
        if (!kvx.empty()) {
          out = first ? absl::StrCat("(", kvx, " (", comma, kvx, ")*)?")
                      : absl::StrCat("(", comma, kvx, ")*");
        }
      } else {
        const std::string next = rest(i + 1, false);
        std::string with = absl::StrCat(first ? "" : comma, kvs[i].first);
        if (!next.empty()) absl::StrAppend(&with, " ", next);
        if (kvs[i].second) {
          out = with;
        } else {
          const std::string without = rest(i + 1, first);
          out = AddRule(absl::StrCat(hint, "-rest"),
                        absl::StrCat(with, " | ", without.empty() ? R"("")" : without));
        }
      }
      memo[{i, first}] = out;
      return out;
    };
    const std::string body = rest(0, true);
    return AddRule(hint, absl::StrCat(R"("{" ws )", body, body.empty() ? "" : " ", R"("}")"));
  }

  const Json& root_;
  std::vector<std::pair<std::string, std::string>> rules_;  // name, body; in order
  std::set<std::string> names_;
  std::set<std::string> used_;               // base rules added
  std::map<std::string, std::string> refs_;  // $ref -> rule
};

}  // namespace

absl::StatusOr<std::string> JsonSchemaToGbnf(std::string_view schema_json) {
  const Json schema = Json::parse(schema_json.begin(), schema_json.end(), nullptr,
                                  /*allow_exceptions=*/false);
  if (schema.is_discarded()) return absl::InvalidArgumentError("the JSON schema is not valid JSON");
  return Converter(schema).Run();
}

const std::string& AnyJsonObjectGbnf() {
  static const std::string* gbnf = [] {
    auto* s = new std::string("root ::= object\n");
    std::vector<std::string> order = {"object", "value",   "array", "string", "char",
                                      "number", "boolean", "null",  "ws"};
    for (const std::string& name : order) {
      absl::StrAppend(s, name, " ::= ", BaseRules().at(name).body, "\n");
    }
    return s;
  }();
  return *gbnf;
}

}  // namespace loom::grammar
