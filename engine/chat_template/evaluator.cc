#include "engine/chat_template/evaluator.h"

#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/absl_compat.h"
#include "engine/chat_template/builtins.h"

namespace loom::chat {
namespace {

class MacroFunction : public Callable {
 public:
  explicit MacroFunction(const Node* node) : node_(node) {}
  const std::string& name() const override { return node_->name; }
  const Node& node() const { return *node_; }

 private:
  const Node* node_;
};

using Scope = absl::flat_hash_map<std::string, Value>;

class Evaluator {
 public:
  Evaluator(const Value& context, const RenderLimits& limits) : context_(context), limits_(limits) {
    builtin_limits_.max_string_bytes = limits.max_output_bytes;
    builtin_limits_.max_sequence_length = limits.max_loop_iterations;
    scopes_.emplace_back();
  }

  absl::StatusOr<std::string> Render(const TemplateAst& ast) {
    std::string out;
    out_ = &out;
    LOOM_RETURN_IF_ERROR(ExecBody(ast.body));
    return out;
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  // ---- Errors --------------------------------------------------------------------------------

  static absl::Status Located(int line, int column, const absl::Status& status) {
    if (status.ok()) return status;
    return absl::Status(status.code(), absl::StrCat("template error at line ", line, ", column ",
                                                    column, ": ", status.message()));
  }
  template <typename T>
  static absl::Status Located(const T& where, const absl::Status& status) {
    return Located(where.line, where.column, status);
  }
  template <typename T>
  static absl::Status LocatedError(const T& where, std::string_view message) {
    return Located(where, absl::InvalidArgumentError(SV(message)));
  }
  // Jinja raises when an undefined value is used for anything but printing, testing and
  // iterating.
  template <typename T>
  static absl::Status UndefinedError(const T& where, const Value& v) {
    return LocatedError(where, v.UndefinedMessage());
  }

  template <typename T>
  absl::Status CheckValueDepth(const T& where, const Value& v) const {
    if (v.depth() + 1 <= limits_.max_value_depth) return absl::OkStatus();
    return Located(where, absl::ResourceExhaustedError(
                              absl::StrCat("value nested deeper than ", limits_.max_value_depth)));
  }

  // ---- Scopes --------------------------------------------------------------------------------

  Value Lookup(const std::string& name) const {
    for (size_t i = scopes_.size(); i-- > floor_;) {
      auto it = scopes_[i].find(name);
      if (it != scopes_[i].end()) return it->second;
    }
    if (floor_ > 0) {
      auto it = scopes_[0].find(name);
      if (it != scopes_[0].end()) return it->second;
    }
    if (context_.IsDict()) {
      if (const Value* v = context_.AsDict().Find(name)) return *v;
    }
    Value global = LookupGlobalFunction(name);
    if (!global.IsUndefined()) return global;
    return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
  }

  void Assign(const std::string& name, Value value) { scopes_.back()[name] = std::move(value); }

  template <typename T>
  absl::Status AssignTargets(const T& where, const std::vector<std::string>& targets,
                             const Value& value) {
    if (targets.size() == 1) {
      Assign(targets[0], value);
      return absl::OkStatus();
    }
    if (!value.IsList() && !value.IsString()) {
      return LocatedError(where,
                          absl::StrCat("cannot unpack non-iterable ", value.TypeName(), " object"));
    }
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(value, builtin_limits_));
    if (items.size() != targets.size()) {
      return LocatedError(where,
                          absl::StrCat(items.size() > targets.size() ? "too many" : "not enough",
                                       " values to unpack (expected ", targets.size(), ", got ",
                                       items.size(), ")"));
    }
    for (size_t i = 0; i < targets.size(); ++i) Assign(targets[i], items[i]);
    return absl::OkStatus();
  }

  // ---- Output --------------------------------------------------------------------------------

  template <typename T>
  absl::Status Emit(const T& where, std::string_view s) {
    if (out_->size() + s.size() > limits_.max_output_bytes) {
      return Located(
          where, absl::ResourceExhaustedError(absl::StrCat("template output exceeds the limit of ",
                                                           limits_.max_output_bytes, " bytes")));
    }
    out_->append(s);
    return absl::OkStatus();
  }

  // Renders `body` into a string instead of the output.
  absl::StatusOr<std::string> Capture(const NodeList& body) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    absl::Status status = ExecBody(body);
    out_ = saved;
    LOOM_RETURN_IF_ERROR(status);
    return buffer;
  }

  // ---- Statements ----------------------------------------------------------------------------

  absl::Status ExecBody(const NodeList& body) {
    for (const NodePtr& node : body) {
      LOOM_RETURN_IF_ERROR(Exec(*node));
      if (flow_ != Flow::kNormal) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::Status Exec(const Node& n) {
    switch (n.kind) {
      case Node::Kind::kText:
        return Emit(n, n.text);
      case Node::Kind::kOutput: {
        LOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        return Emit(n, v.Str());
      }
      case Node::Kind::kIf:
        for (size_t i = 0; i < n.conditions.size(); ++i) {
          LOOM_ASSIGN_OR_RETURN(Value cond, Eval(*n.conditions[i]));
          if (cond.Truthy()) return ExecBody(n.bodies[i]);
        }
        return ExecBody(n.else_body);
      case Node::Kind::kFor:
        return ExecFor(n);
      case Node::Kind::kSet: {
        LOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        if (n.attribute.empty()) return AssignTargets(n, n.targets, v);
        Value target = Lookup(n.targets[0]);
        if (!target.IsNamespace()) {
          return LocatedError(n, "cannot assign attribute on non-namespace object");
        }
        LOOM_RETURN_IF_ERROR(CheckValueDepth(n, v));
        target.AsNamespace().attributes.Set(n.attribute, std::move(v));
        return absl::OkStatus();
      }
      case Node::Kind::kSetBlock: {
        LOOM_ASSIGN_OR_RETURN(std::string captured, Capture(n.body));
        Value v(std::move(captured));
        if (n.filter != nullptr) {
          LOOM_ASSIGN_OR_RETURN(v, ApplyFilterChain(*n.filter, v));
        }
        Assign(n.targets[0], std::move(v));
        return absl::OkStatus();
      }
      case Node::Kind::kFilterBlock: {
        LOOM_ASSIGN_OR_RETURN(std::string captured, Capture(n.body));
        LOOM_ASSIGN_OR_RETURN(Value v, ApplyFilterChain(*n.filter, Value(std::move(captured))));
        return Emit(n, v.Str());
      }
      case Node::Kind::kMacro:
        Assign(n.name, Value::MakeCallable(std::make_shared<MacroFunction>(&n)));
        return absl::OkStatus();
      case Node::Kind::kBreak:
        flow_ = Flow::kBreak;
        return absl::OkStatus();
      case Node::Kind::kContinue:
        flow_ = Flow::kContinue;
        return absl::OkStatus();
      case Node::Kind::kScope:
        return ExecBody(n.body);
    }
    return absl::OkStatus();
  }

  absl::Status CountIteration(const Node& n) {
    if (++loop_iterations_ > limits_.max_loop_iterations) {
      return Located(n, absl::ResourceExhaustedError(absl::StrCat("template exceeds the limit of ",
                                                                  limits_.max_loop_iterations,
                                                                  " loop iterations")));
    }
    return absl::OkStatus();
  }

  absl::Status ExecFor(const Node& n) {
    LOOM_ASSIGN_OR_RETURN(Value iterable, Eval(*n.expr));
    absl::StatusOr<ValueList> iterated = Iterate(iterable, builtin_limits_);
    if (!iterated.ok()) return Located(*n.expr, iterated.status());
    ValueList items = std::move(iterated).value();
    if (n.filter != nullptr) {
      ValueList kept;
      for (Value& item : items) {
        LOOM_RETURN_IF_ERROR(CountIteration(n));
        scopes_.emplace_back();
        absl::Status status = AssignTargets(n, n.targets, item);
        bool keep = false;
        if (status.ok()) {
          absl::StatusOr<Value> cond = Eval(*n.filter);
          if (cond.ok()) {
            keep = cond->Truthy();
          } else {
            status = cond.status();
          }
        }
        scopes_.pop_back();
        LOOM_RETURN_IF_ERROR(status);
        if (keep) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return ExecBody(n.else_body);
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      LOOM_RETURN_IF_ERROR(CountIteration(n));
      ValueDict loop;
      loop.Set("index", Value(i + 1));
      loop.Set("index0", Value(i));
      loop.Set("revindex", Value(length - i));
      loop.Set("revindex0", Value(length - i - 1));
      loop.Set("first", Value(i == 0));
      loop.Set("last", Value(i == length - 1));
      loop.Set("length", Value(length));
      loop.Set("depth", Value(1));
      loop.Set("depth0", Value(0));
      if (i > 0) loop.Set("previtem", items[i - 1]);
      if (i + 1 < length) loop.Set("nextitem", items[i + 1]);
      scopes_.emplace_back();
      Assign("loop", Value(std::move(loop)));
      absl::Status status = AssignTargets(n, n.targets, items[i]);
      if (status.ok()) status = ExecBody(n.body);
      scopes_.pop_back();
      LOOM_RETURN_IF_ERROR(status);
      if (flow_ == Flow::kBreak) {
        flow_ = Flow::kNormal;
        break;
      }
      flow_ = Flow::kNormal;
    }
    return absl::OkStatus();
  }

  // ---- Expressions ---------------------------------------------------------------------------

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first_child) {
    CallArgs args;
    for (size_t i = first_child; i < e.children.size(); ++i) {
      LOOM_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i]));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [key, expr] : e.kwargs) {
      LOOM_ASSIGN_OR_RETURN(Value v, Eval(*expr));
      args.keyword.emplace_back(key, std::move(v));
    }
    return args;
  }

  // Applies a filter chain whose innermost input is null (set and filter blocks) to `input`.
  absl::StatusOr<Value> ApplyFilterChain(const Expr& chain, const Value& input) {
    Value in = input;
    if (chain.children[0] != nullptr) {
      LOOM_ASSIGN_OR_RETURN(in, ApplyFilterChain(*chain.children[0], input));
    }
    LOOM_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(chain, 1));
    absl::StatusOr<Value> result = ApplyFilter(chain.name, in, args, builtin_limits_);
    if (!result.ok()) return Located(chain, result.status());
    return result;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        ValueList items;
        items.reserve(e.children.size());
        for (const ExprPtr& child : e.children) {
          LOOM_ASSIGN_OR_RETURN(Value v, Eval(*child));
          items.push_back(std::move(v));
        }
        Value v =
            e.kind == Expr::Kind::kTuple ? Value::Tuple(std::move(items)) : Value(std::move(items));
        LOOM_RETURN_IF_ERROR(CheckValueDepth(e, v));
        return v;
      }
      case Expr::Kind::kDict: {
        ValueDict dict;
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          LOOM_ASSIGN_OR_RETURN(Value key, Eval(*e.children[i]));
          if (!key.IsString()) {
            return LocatedError(*e.children[i], "dict keys must be strings in chat templates");
          }
          LOOM_ASSIGN_OR_RETURN(Value value, Eval(*e.children[i + 1]));
          dict.Set(key.AsString(), std::move(value));
        }
        Value v(std::move(dict));
        LOOM_RETURN_IF_ERROR(CheckValueDepth(e, v));
        return v;
      }
      case Expr::Kind::kGetAttr: {
        LOOM_ASSIGN_OR_RETURN(Value object, Eval(*e.children[0]));
        if (object.IsUndefined()) return UndefinedError(e, object);
        absl::StatusOr<Value> result = GetAttribute(object, e.name);
        if (!result.ok()) return Located(e, result.status());
        return result;
      }
      case Expr::Kind::kGetItem: {
        LOOM_ASSIGN_OR_RETURN(Value object, Eval(*e.children[0]));
        if (object.IsUndefined()) return UndefinedError(e, object);
        LOOM_ASSIGN_OR_RETURN(Value key, Eval(*e.children[1]));
        absl::StatusOr<Value> result = GetItem(object, key);
        if (!result.ok()) return Located(e, result.status());
        return result;
      }
      case Expr::Kind::kSlice: {
        LOOM_ASSIGN_OR_RETURN(Value object, Eval(*e.children[0]));
        if (object.IsUndefined()) return UndefinedError(e, object);
        Value parts[3] = {Value::None(), Value::None(), Value::None()};
        for (int i = 0; i < 3; ++i) {
          if (e.children[i + 1] != nullptr) {
            LOOM_ASSIGN_OR_RETURN(parts[i], Eval(*e.children[i + 1]));
          }
        }
        absl::StatusOr<Value> result = Slice(object, parts[0], parts[1], parts[2]);
        if (!result.ok()) return Located(e, result.status());
        return result;
      }
      case Expr::Kind::kCall:
        return EvalCall(e);
      case Expr::Kind::kFilter: {
        LOOM_ASSIGN_OR_RETURN(Value input, Eval(*e.children[0]));
        LOOM_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
        absl::StatusOr<Value> result = ApplyFilter(e.name, input, args, builtin_limits_);
        if (!result.ok()) return Located(e, result.status());
        return result;
      }
      case Expr::Kind::kTest: {
        LOOM_ASSIGN_OR_RETURN(Value input, Eval(*e.children[0]));
        LOOM_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
        absl::StatusOr<bool> result = ApplyTest(e.name, input, args, builtin_limits_);
        if (!result.ok()) return Located(e, result.status());
        return Value(*result != e.negated);
      }
      case Expr::Kind::kUnary: {
        LOOM_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0]));
        if (e.name == "not") return Value(!v.Truthy());
        if (v.IsUndefined()) return UndefinedError(e, v);
        if (!v.IsNumber()) {
          return LocatedError(
              e, absl::StrCat("bad operand type for unary ", e.name, ": '", v.TypeName(), "'"));
        }
        if (e.name == "+") return v.IsBool() ? Value(v.NumberAsInt()) : v;
        if (v.IsFloat()) return Value(-v.AsFloat());
        if (v.NumberAsInt() == INT64_MIN) return LocatedError(e, "integer overflow");
        return Value(-v.NumberAsInt());
      }
      case Expr::Kind::kBinary: {
        LOOM_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0]));
        LOOM_ASSIGN_OR_RETURN(Value b, Eval(*e.children[1]));
        if (e.name != "~") {
          if (a.IsUndefined()) return UndefinedError(e, a);
          if (b.IsUndefined()) return UndefinedError(e, b);
        }
        absl::StatusOr<Value> result = BinaryOp(e.name, a, b, builtin_limits_);
        if (!result.ok()) return Located(e, result.status());
        return result;
      }
      case Expr::Kind::kAnd: {
        LOOM_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0]));
        if (!a.Truthy()) return a;
        return Eval(*e.children[1]);
      }
      case Expr::Kind::kOr: {
        LOOM_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0]));
        if (a.Truthy()) return a;
        return Eval(*e.children[1]);
      }
      case Expr::Kind::kCompare:
        return EvalCompare(e);
      case Expr::Kind::kCondExpr: {
        LOOM_ASSIGN_OR_RETURN(Value cond, Eval(*e.children[0]));
        if (cond.Truthy()) return Eval(*e.children[1]);
        if (e.children[2] == nullptr) return Value::Undefined("the inline if had no else");
        return Eval(*e.children[2]);
      }
    }
    return LocatedError(e, "unsupported expression");
  }

  absl::StatusOr<Value> EvalCompare(const Expr& e) {
    LOOM_ASSIGN_OR_RETURN(Value left, Eval(*e.children[0]));
    for (size_t i = 0; i < e.ops.size(); ++i) {
      LOOM_ASSIGN_OR_RETURN(Value right, Eval(*e.children[i + 1]));
      const std::string& op = e.ops[i];
      bool result;
      if (op == "==" || op == "!=") {
        result = left.Equals(right) == (op == "==");
      } else if (op == "in" || op == "notin") {
        absl::StatusOr<bool> in = Contains(right, left);
        if (!in.ok()) return Located(e, in.status());
        result = *in == (op == "in");
      } else {
        if (left.IsUndefined()) return UndefinedError(e, left);
        if (right.IsUndefined()) return UndefinedError(e, right);
        const bool swap = op == ">" || op == "<=";
        absl::StatusOr<bool> less = swap ? LessThan(right, left) : LessThan(left, right);
        if (!less.ok()) {
          return LocatedError(e, absl::StrCat("'", op, "' not supported between instances of '",
                                              left.TypeName(), "' and '", right.TypeName(), "'"));
        }
        // a < b; a > b == b < a; a <= b == !(b < a); a >= b == !(a < b).
        result = (op == "<" || op == ">") ? *less : !*less;
      }
      if (!result) return Value(false);
      left = std::move(right);
    }
    return Value(true);
  }

  absl::StatusOr<Value> EvalCall(const Expr& e) {
    const Expr& callee = *e.children[0];
    LOOM_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
    if (callee.kind == Expr::Kind::kGetAttr) {
      LOOM_ASSIGN_OR_RETURN(Value object, Eval(*callee.children[0]));
      if (object.IsUndefined()) return UndefinedError(e, object);
      if (object.IsDict() || object.IsNamespace()) {
        Value member = object.Get(callee.name);
        if (member.IsCallable()) return CallFunction(e, member, args);
      }
      if (callee.name == "cycle" && callee.children[0]->kind == Expr::Kind::kName &&
          callee.children[0]->name == "loop" && object.IsDict()) {
        if (args.positional.empty()) return LocatedError(e, "no items for cycling given");
        const int64_t index0 = object.Get("index0").NumberAsInt();
        return args.positional[index0 % static_cast<int64_t>(args.positional.size())];
      }
      absl::StatusOr<Value> result = CallMethod(object, callee.name, args, builtin_limits_);
      if (!result.ok()) return Located(e, result.status());
      return result;
    }
    LOOM_ASSIGN_OR_RETURN(Value function, Eval(callee));
    return CallFunction(e, function, args);
  }

  absl::StatusOr<Value> CallFunction(const Expr& e, const Value& function, const CallArgs& args) {
    if (function.IsUndefined()) return UndefinedError(e, function);
    if (!function.IsCallable()) {
      return LocatedError(e, absl::StrCat("'", function.TypeName(), "' object is not callable"));
    }
    const Callable& callable = function.AsCallable();
    if (const auto* macro = dynamic_cast<const MacroFunction*>(&callable)) {
      return CallMacro(e, macro->node(), args);
    }
    absl::StatusOr<Value> result = CallGlobalFunction(callable, args, builtin_limits_);
    if (!result.ok() && callable.name() != "raise_exception") {
      return Located(e, result.status());
    }
    return result;
  }

  absl::StatusOr<Value> CallMacro(const Expr& e, const Node& macro, const CallArgs& args) {
    if (call_depth_ >= limits_.max_call_depth) {
      return Located(e, absl::ResourceExhaustedError(absl::StrCat("macro calls nested deeper than ",
                                                                  limits_.max_call_depth)));
    }
    if (args.positional.size() > macro.params.size()) {
      return LocatedError(e, absl::StrCat("macro '", macro.name, "' takes not more than ",
                                          macro.params.size(), " argument(s)"));
    }
    Scope scope;
    std::vector<bool> bound(macro.params.size(), false);
    for (size_t i = 0; i < args.positional.size(); ++i) {
      scope[macro.params[i]] = args.positional[i];
      bound[i] = true;
    }
    for (const auto& [key, value] : args.keyword) {
      size_t i = 0;
      while (i < macro.params.size() && macro.params[i] != key) ++i;
      if (i == macro.params.size()) {
        return LocatedError(
            e, absl::StrCat("macro '", macro.name, "' was invoked with unknown keyword argument '",
                            key, "'"));
      }
      scope[key] = value;
      bound[i] = true;
    }
    for (size_t i = 0; i < macro.params.size(); ++i) {
      if (bound[i]) continue;
      if (macro.defaults[i] != nullptr) {
        LOOM_ASSIGN_OR_RETURN(scope[macro.params[i]], Eval(*macro.defaults[i]));
      } else {
        scope[macro.params[i]] =
            Value::Undefined(absl::StrCat("'", macro.params[i], "' is undefined"));
      }
    }
    // The macro body sees its arguments and the template's top-level variables.
    const size_t saved_floor = floor_;
    scopes_.push_back(std::move(scope));
    floor_ = scopes_.size() - 1;
    ++call_depth_;
    absl::StatusOr<std::string> rendered = Capture(macro.body);
    --call_depth_;
    scopes_.pop_back();
    floor_ = saved_floor;
    flow_ = Flow::kNormal;
    if (!rendered.ok()) return rendered.status();
    return Value(std::move(rendered).value());
  }

  const Value& context_;
  RenderLimits limits_;
  BuiltinLimits builtin_limits_;
  std::vector<Scope> scopes_;
  size_t floor_ = 0;  // scopes below this (except scope 0) are hidden inside a macro call
  std::string* out_ = nullptr;
  Flow flow_ = Flow::kNormal;
  int64_t loop_iterations_ = 0;
  int call_depth_ = 0;
};

}  // namespace

absl::StatusOr<std::string> RenderTemplate(const TemplateAst& ast, const Value& context,
                                           const RenderLimits& limits) {
  if (!context.IsDict() && !context.IsUndefined()) {
    return absl::InvalidArgumentError(
        absl::StrCat("template context must be a dict, got ", context.TypeName()));
  }
  Evaluator evaluator(context, limits);
  return evaluator.Render(ast);
}

}  // namespace loom::chat
