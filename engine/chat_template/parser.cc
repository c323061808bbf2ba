#include "engine/chat_template/parser.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/chat_template/absl_compat.h"
#include "engine/chat_template/builtins.h"

namespace loom::chat {
namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const ParserOptions& options)
      : tokens_(std::move(tokens)), options_(options) {}

  absl::StatusOr<TemplateAst> Run() {
    TemplateAst ast;
    std::string end_tag;
    LOOM_ASSIGN_OR_RETURN(ast.body, ParseBody({}, &end_tag, current()));
    LOOM_RETURN_IF_ERROR(CheckNames(ast.body, /*soft=*/false));
    return ast;
  }

 private:
  // ---- Token helpers -------------------------------------------------------------------------

  const Token& current() const { return tokens_[index_]; }
  const Token& peek(size_t ahead = 1) const {
    return tokens_[std::min(index_ + ahead, tokens_.size() - 1)];
  }
  void Next() {
    if (index_ + 1 < tokens_.size()) ++index_;
  }
  bool IsOp(std::string_view op) const {
    return current().type == TokenType::kOperator && current().value == op;
  }
  bool IsName(std::string_view name) const {
    return current().type == TokenType::kName && current().value == name;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }

  template <typename T>
  absl::Status ErrorAt(const T& at, std::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat("template syntax error at line ", at.line,
                                                   ", column ", at.column, ": ", SV(message)));
  }
  absl::Status Unexpected(std::string_view expected) const {
    return ErrorAt(current(),
                   absl::StrCat("expected ", SV(expected), ", got ", DescribeToken(current())));
  }
  absl::Status ExpectOp(std::string_view op) {
    if (!SkipOp(op)) return Unexpected(absl::StrCat("'", SV(op), "'"));
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (current().type != TokenType::kName) return Unexpected("a name");
    std::string name = current().value;
    Next();
    return name;
  }
  absl::Status ExpectBlockEnd() {
    if (current().type != TokenType::kBlockEnd) return Unexpected("end of statement block '%}'");
    Next();
    return absl::OkStatus();
  }

  // Guards recursion depth; `depth_` is restored by the returned object's destructor.
  class DepthGuard {
   public:
    explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
    ~DepthGuard() { --*depth_; }

   private:
    int* depth_;
  };
  absl::Status CheckDepth() const {
    if (depth_ > options_.max_nesting_depth) {
      return ErrorAt(current(), absl::StrCat("template nested too deeply (limit ",
                                             options_.max_nesting_depth, ")"));
    }
    return absl::OkStatus();
  }

  ExprPtr MakeExpr(Expr::Kind kind, const Token& at) const {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  // Adds `child` (possibly null) to `parent`, bounding the expression tree's height: evaluating
  // and destroying a tree recurses once per level.
  absl::Status CheckChildDepth(Expr* parent, const Expr* child) {
    if (child == nullptr) return absl::OkStatus();
    parent->depth = std::max(parent->depth, child->depth + 1);
    if (parent->depth > options_.max_nesting_depth) {
      return ErrorAt(current(), absl::StrCat("expression nested too deeply (limit ",
                                             options_.max_nesting_depth, ")"));
    }
    return absl::OkStatus();
  }
  absl::Status Attach(Expr* parent, ExprPtr child) {
    LOOM_RETURN_IF_ERROR(CheckChildDepth(parent, child.get()));
    parent->children.push_back(std::move(child));
    return absl::OkStatus();
  }

  NodePtr MakeNode(Node::Kind kind, const Token& at) const {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = at.line;
    n->column = at.column;
    return n;
  }

  // ---- Unknown filters and tests -------------------------------------------------------------

  // Like Jinja2 3.x, an unknown filter or test is a compile-time error, except inside an `if`
  // statement or an inline `if` (a "soft" frame), where it only fails when evaluated; a loop,
  // macro or block body starts a new, strict frame.
  absl::Status CheckNames(const NodeList& body, bool soft) const {
    for (const NodePtr& n : body) LOOM_RETURN_IF_ERROR(CheckNames(*n, soft));
    return absl::OkStatus();
  }

  absl::Status CheckNames(const Node& n, bool soft) const {
    switch (n.kind) {
      case Node::Kind::kIf:
        for (const ExprPtr& cond : n.conditions) LOOM_RETURN_IF_ERROR(CheckNames(cond.get(), true));
        for (const NodeList& body : n.bodies) LOOM_RETURN_IF_ERROR(CheckNames(body, true));
        return CheckNames(n.else_body, true);
      case Node::Kind::kFor:
        LOOM_RETURN_IF_ERROR(CheckNames(n.expr.get(), soft));
        LOOM_RETURN_IF_ERROR(CheckNames(n.filter.get(), false));
        LOOM_RETURN_IF_ERROR(CheckNames(n.body, false));
        return CheckNames(n.else_body, false);
      case Node::Kind::kMacro:
        for (const ExprPtr& d : n.defaults) LOOM_RETURN_IF_ERROR(CheckNames(d.get(), false));
        return CheckNames(n.body, false);
      case Node::Kind::kSetBlock:
      case Node::Kind::kFilterBlock:
        LOOM_RETURN_IF_ERROR(CheckNames(n.filter.get(), soft));
        return CheckNames(n.body, false);
      case Node::Kind::kScope:
        return CheckNames(n.body, soft);
      default:
        return CheckNames(n.expr.get(), soft);
    }
  }

  absl::Status CheckNames(const Expr* e, bool soft) const {
    if (e == nullptr) return absl::OkStatus();
    if (e->kind == Expr::Kind::kCondExpr) soft = true;
    if (!soft && e->kind == Expr::Kind::kFilter && !IsKnownFilter(e->name)) {
      return ErrorAt(*e, absl::StrCat("no filter named '", e->name, "'"));
    }
    if (!soft && e->kind == Expr::Kind::kTest && !IsKnownTest(e->name)) {
      return ErrorAt(*e, absl::StrCat("no test named '", e->name, "'"));
    }
    for (const ExprPtr& child : e->children) LOOM_RETURN_IF_ERROR(CheckNames(child.get(), soft));
    for (const auto& [key, value] : e->kwargs) LOOM_RETURN_IF_ERROR(CheckNames(value.get(), soft));
    return absl::OkStatus();
  }

  // ---- Statements ----------------------------------------------------------------------------

  // Parses nodes until a `{% tag %}` with tag in `end_tags`; consumes `{%` and the tag name and
  // stores the name in `end_tag`. `opener` is the token reported when the template ends early.
  absl::StatusOr<NodeList> ParseBody(std::initializer_list<std::string_view> end_tags,
                                     std::string* end_tag, const Token& opener) {
    DepthGuard guard(&depth_);
    LOOM_RETURN_IF_ERROR(CheckDepth());
    NodeList body;
    while (true) {
      const Token& tok = current();
      switch (tok.type) {
        case TokenType::kEof: {
          if (end_tags.size() == 0) return body;
          std::vector<std::string> quoted;
          for (std::string_view t : end_tags) quoted.push_back(absl::StrCat("'", SV(t), "'"));
          return ErrorAt(opener, absl::StrCat("unexpected end of template: block opened here is "
                                              "never closed (looking for ",
                                              absl::StrJoin(quoted, " or "), ")"));
        }
        case TokenType::kText: {
          NodePtr n = MakeNode(Node::Kind::kText, tok);
          n->text = tok.value;
          body.push_back(std::move(n));
          Next();
          break;
        }
        case TokenType::kVariableBegin: {
          NodePtr n = MakeNode(Node::Kind::kOutput, tok);
          Next();
          LOOM_ASSIGN_OR_RETURN(n->expr, ParseTuple(/*with_condexpr=*/true));
          if (current().type != TokenType::kVariableEnd) {
            return Unexpected("end of print statement '}}'");
          }
          Next();
          body.push_back(std::move(n));
          break;
        }
        case TokenType::kBlockBegin: {
          const Token& name_tok = peek();
          if (name_tok.type == TokenType::kName) {
            for (std::string_view t : end_tags) {
              if (name_tok.value == t) {
                *end_tag = name_tok.value;
                Next();
                Next();
                return body;
              }
            }
          }
          Next();
          LOOM_ASSIGN_OR_RETURN(NodePtr n, ParseStatement());
          if (n != nullptr) body.push_back(std::move(n));
          break;
        }
        default:
          return Unexpected("template text or a tag");
      }
    }
  }

  absl::StatusOr<NodePtr> ParseStatement() {
    const Token tag = current();
    if (tag.type != TokenType::kName) return Unexpected("a statement name");
    const std::string& name = tag.value;
    if (name == "for") return ParseFor();
    if (name == "if") return ParseIf();
    if (name == "set") return ParseSet();
    if (name == "macro") return ParseMacro();
    if (name == "filter") return ParseFilterBlock();
    if (name == "generation") {
      Next();
      LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
      NodePtr n = MakeNode(Node::Kind::kScope, tag);
      std::string end;
      LOOM_ASSIGN_OR_RETURN(n->body, ParseBody({"endgeneration"}, &end, tag));
      LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
      return n;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) return ErrorAt(tag, absl::StrCat("'", name, "' outside of a loop"));
      Next();
      LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
      return MakeNode(name == "break" ? Node::Kind::kBreak : Node::Kind::kContinue, tag);
    }
    static constexpr std::string_view kEndTags[] = {"endfor",    "endif",         "else",
                                                    "elif",      "endset",        "endmacro",
                                                    "endfilter", "endgeneration", "endraw"};
    for (std::string_view end : kEndTags) {
      if (name == end) return ErrorAt(tag, absl::StrCat("unexpected '", name, "' tag"));
    }
    return ErrorAt(tag, absl::StrCat("unknown or unsupported tag '", name, "'"));
  }

  // for target[, target] in iterable [if condition] [recursive] %} body [else] endfor
  absl::StatusOr<NodePtr> ParseFor() {
    const Token tag = current();
    Next();
    NodePtr n = MakeNode(Node::Kind::kFor, tag);
    LOOM_ASSIGN_OR_RETURN(n->targets, ParseAssignNames());
    if (!SkipName("in")) return Unexpected("'in'");
    LOOM_ASSIGN_OR_RETURN(n->expr, ParseTuple(/*with_condexpr=*/false));
    if (SkipName("if")) {
      LOOM_ASSIGN_OR_RETURN(n->filter, ParseExpression(/*with_condexpr=*/true));
    }
    if (IsName("recursive")) return ErrorAt(current(), "recursive loops are not supported");
    LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    ++loop_depth_;
    auto body = ParseBody({"endfor", "else"}, &end, tag);
    --loop_depth_;
    if (!body.ok()) return body.status();
    n->body = std::move(body).value();
    if (end == "else") {
      LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
      LOOM_ASSIGN_OR_RETURN(n->else_body, ParseBody({"endfor"}, &end, tag));
    }
    LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  // Names for `for` and `set`: `x`, `k, v` or `(k, v)`.
  absl::StatusOr<std::vector<std::string>> ParseAssignNames() {
    std::vector<std::string> names;
    const bool parens = SkipOp("(");
    while (true) {
      LOOM_ASSIGN_OR_RETURN(std::string name, ExpectName());
      if (name == "true" || name == "false" || name == "none" || name == "True" ||
          name == "False" || name == "None") {
        return ErrorAt(current(), absl::StrCat("cannot assign to '", name, "'"));
      }
      names.push_back(std::move(name));
      if (!SkipOp(",")) break;
      if (!parens && !(current().type == TokenType::kName)) break;
      if (parens && IsOp(")")) break;
    }
    if (parens) LOOM_RETURN_IF_ERROR(ExpectOp(")"));
    return names;
  }

  absl::StatusOr<NodePtr> ParseIf() {
    const Token tag = current();
    Next();
    NodePtr n = MakeNode(Node::Kind::kIf, tag);
    while (true) {
      LOOM_ASSIGN_OR_RETURN(ExprPtr cond, ParseTuple(/*with_condexpr=*/false));
      LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      LOOM_ASSIGN_OR_RETURN(NodeList body, ParseBody({"elif", "else", "endif"}, &end, tag));
      n->conditions.push_back(std::move(cond));
      n->bodies.push_back(std::move(body));
      if (end == "elif") continue;
      if (end == "else") {
        LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
        LOOM_ASSIGN_OR_RETURN(n->else_body, ParseBody({"endif"}, &end, tag));
      }
      LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
      return n;
    }
  }

  absl::StatusOr<NodePtr> ParseSet() {
    const Token tag = current();
    Next();
    NodePtr n = MakeNode(Node::Kind::kSet, tag);
    if (current().type == TokenType::kName && peek().type == TokenType::kOperator &&
        peek().value == ".") {
      n->targets.push_back(current().value);
      Next();
      Next();
      LOOM_ASSIGN_OR_RETURN(n->attribute, ExpectName());
      LOOM_RETURN_IF_ERROR(ExpectOp("="));
    } else {
      LOOM_ASSIGN_OR_RETURN(n->targets, ParseAssignNames());
      if (!SkipOp("=")) {
        if (n->targets.size() != 1) return Unexpected("'='");
        n->kind = Node::Kind::kSetBlock;
        if (IsOp("|")) {
          LOOM_ASSIGN_OR_RETURN(n->filter, ParseFilterChain(nullptr));
        }
        LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
        std::string end;
        LOOM_ASSIGN_OR_RETURN(n->body, ParseBody({"endset"}, &end, tag));
        LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
        return n;
      }
    }
    LOOM_ASSIGN_OR_RETURN(n->expr, ParseTuple(/*with_condexpr=*/true));
    LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  absl::StatusOr<NodePtr> ParseMacro() {
    const Token tag = current();
    Next();
    NodePtr n = MakeNode(Node::Kind::kMacro, tag);
    LOOM_ASSIGN_OR_RETURN(n->name, ExpectName());
    LOOM_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (!n->params.empty()) LOOM_RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;
      LOOM_ASSIGN_OR_RETURN(std::string param, ExpectName());
      ExprPtr def;
      if (SkipOp("=")) {
        LOOM_ASSIGN_OR_RETURN(def, ParseExpression(/*with_condexpr=*/true));
      } else if (!n->defaults.empty() && n->defaults.back() != nullptr) {
        return ErrorAt(current(), "non-default argument follows default argument");
      }
      n->params.push_back(std::move(param));
      n->defaults.push_back(std::move(def));
    }
    Next();
    LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    auto body = ParseBody({"endmacro"}, &end, tag);
    loop_depth_ = saved_loop_depth;
    if (!body.ok()) return body.status();
    n->body = std::move(body).value();
    LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  absl::StatusOr<NodePtr> ParseFilterBlock() {
    const Token tag = current();
    NodePtr n = MakeNode(Node::Kind::kFilterBlock, tag);
    // `{% filter upper | trim %}`: the token after `filter` starts the chain.
    LOOM_ASSIGN_OR_RETURN(n->filter, ParseFilterChain(nullptr));
    LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    LOOM_ASSIGN_OR_RETURN(n->body, ParseBody({"endfilter"}, &end, tag));
    LOOM_RETURN_IF_ERROR(ExpectBlockEnd());
    return n;
  }

  // ---- Expressions (precedence as in jinja2.parser) ------------------------------------------

  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr) {
    const Token start = current();
    LOOM_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(with_condexpr));
    if (!IsOp(",")) return first;
    ExprPtr tuple = MakeExpr(Expr::Kind::kTuple, start);
    LOOM_RETURN_IF_ERROR(Attach(tuple.get(), std::move(first)));
    while (SkipOp(",")) {
      if (!StartsExpression()) break;
      LOOM_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(with_condexpr));
      LOOM_RETURN_IF_ERROR(Attach(tuple.get(), std::move(item)));
    }
    return tuple;
  }

  bool StartsExpression() const {
    switch (current().type) {
      case TokenType::kName:
      case TokenType::kString:
      case TokenType::kInteger:
      case TokenType::kFloat:
        return true;
      case TokenType::kOperator:
        return IsOp("(") || IsOp("[") || IsOp("{") || IsOp("-") || IsOp("+");
      default:
        return false;
    }
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    DepthGuard guard(&depth_);
    LOOM_RETURN_IF_ERROR(CheckDepth());
    if (!with_condexpr) return ParseOr();
    const Token start = current();
    LOOM_ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (IsName("if")) {
      Next();
      ExprPtr cond = MakeExpr(Expr::Kind::kCondExpr, start);
      LOOM_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
      ExprPtr otherwise;
      if (SkipName("else")) {
        LOOM_ASSIGN_OR_RETURN(otherwise, ParseExpression(/*with_condexpr=*/true));
      }
      LOOM_RETURN_IF_ERROR(Attach(cond.get(), std::move(test)));
      LOOM_RETURN_IF_ERROR(Attach(cond.get(), std::move(expr)));
      LOOM_RETURN_IF_ERROR(Attach(cond.get(), std::move(otherwise)));
      expr = std::move(cond);
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    LOOM_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      ExprPtr node = MakeExpr(Expr::Kind::kOr, current());
      Next();
      LOOM_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(left)));
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(right)));
      left = std::move(node);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    LOOM_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      ExprPtr node = MakeExpr(Expr::Kind::kAnd, current());
      Next();
      LOOM_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(left)));
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(right)));
      left = std::move(node);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(&depth_);
      LOOM_RETURN_IF_ERROR(CheckDepth());
      ExprPtr node = MakeExpr(Expr::Kind::kUnary, current());
      node->name = "not";
      Next();
      LOOM_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(operand)));
      return node;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const Token start = current();
    LOOM_ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (current().type == TokenType::kOperator &&
          (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp("<=") || IsOp(">") || IsOp(">="))) {
        op = current().value;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && peek().type == TokenType::kName && peek().value == "in") {
        op = "notin";
        Next();
        Next();
      } else {
        break;
      }
      if (cmp == nullptr) {
        cmp = MakeExpr(Expr::Kind::kCompare, start);
        LOOM_RETURN_IF_ERROR(Attach(cmp.get(), std::move(first)));
      }
      LOOM_ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
      cmp->ops.push_back(std::move(op));
      LOOM_RETURN_IF_ERROR(Attach(cmp.get(), std::move(operand)));
    }
    return cmp != nullptr ? std::move(cmp) : std::move(first);
  }

  using SubParser = absl::StatusOr<ExprPtr> (Parser::*)();

  absl::StatusOr<ExprPtr> ParseBinaryLevel(std::initializer_list<std::string_view> ops,
                                           SubParser next) {
    LOOM_ASSIGN_OR_RETURN(ExprPtr left, (this->*next)());
    while (true) {
      bool matched = false;
      for (std::string_view op : ops) matched = matched || IsOp(op);
      if (!matched) return left;
      ExprPtr node = MakeExpr(Expr::Kind::kBinary, current());
      node->name = current().value;
      Next();
      LOOM_ASSIGN_OR_RETURN(ExprPtr right, (this->*next)());
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(left)));
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(right)));
      left = std::move(node);
    }
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    return ParseBinaryLevel({"+", "-"}, &Parser::ParseConcat);
  }
  absl::StatusOr<ExprPtr> ParseConcat() { return ParseBinaryLevel({"~"}, &Parser::ParseMath2); }
  absl::StatusOr<ExprPtr> ParseMath2() {
    return ParseBinaryLevel({"*", "/", "//", "%"}, &Parser::ParsePow);
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    return ParseBinaryLevel({"**"}, &Parser::ParseUnaryFiltered);
  }
  absl::StatusOr<ExprPtr> ParseUnaryFiltered() { return ParseUnary(/*with_filter=*/true); }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(&depth_);
    LOOM_RETURN_IF_ERROR(CheckDepth());
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = MakeExpr(Expr::Kind::kUnary, current());
      node->name = current().value;
      Next();
      LOOM_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(/*with_filter=*/false));
      LOOM_RETURN_IF_ERROR(Attach(node.get(), std::move(operand)));
    } else {
      LOOM_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    LOOM_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      LOOM_ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token tok = current();
    switch (tok.type) {
      case TokenType::kName: {
        Next();
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, tok);
        if (tok.value == "true" || tok.value == "True") {
          e->literal = Value(true);
        } else if (tok.value == "false" || tok.value == "False") {
          e->literal = Value(false);
        } else if (tok.value == "none" || tok.value == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = tok.value;
        }
        return e;
      }
      case TokenType::kString: {
        std::string s;
        while (current().type == TokenType::kString) {
          s += current().value;
          Next();
        }
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, tok);
        e->literal = Value(std::move(s));
        return e;
      }
      case TokenType::kInteger: {
        Next();
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, tok);
        e->literal = Value(tok.int_value);
        return e;
      }
      case TokenType::kFloat: {
        Next();
        ExprPtr e = MakeExpr(Expr::Kind::kLiteral, tok);
        e->literal = Value(tok.float_value);
        return e;
      }
      case TokenType::kOperator:
        if (tok.value == "(") {
          Next();
          if (SkipOp(")")) return MakeExpr(Expr::Kind::kTuple, tok);
          LOOM_ASSIGN_OR_RETURN(ExprPtr inner, ParseTuple(/*with_condexpr=*/true));
          LOOM_RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (tok.value == "[") {
          Next();
          ExprPtr list = MakeExpr(Expr::Kind::kList, tok);
          while (!IsOp("]")) {
            if (!list->children.empty()) LOOM_RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("]")) break;
            LOOM_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(/*with_condexpr=*/true));
            LOOM_RETURN_IF_ERROR(Attach(list.get(), std::move(item)));
          }
          Next();
          return list;
        }
        if (tok.value == "{") {
          Next();
          ExprPtr dict = MakeExpr(Expr::Kind::kDict, tok);
          while (!IsOp("}")) {
            if (!dict->children.empty()) LOOM_RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("}")) break;
            LOOM_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(/*with_condexpr=*/true));
            LOOM_RETURN_IF_ERROR(ExpectOp(":"));
            LOOM_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(/*with_condexpr=*/true));
            LOOM_RETURN_IF_ERROR(Attach(dict.get(), std::move(key)));
            LOOM_RETURN_IF_ERROR(Attach(dict.get(), std::move(value)));
          }
          Next();
          return dict;
        }
        break;
      default:
        break;
    }
    return Unexpected("an expression");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".") || IsOp("[")) {
        LOOM_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
      } else if (IsOp("(")) {
        LOOM_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        LOOM_ASSIGN_OR_RETURN(node, ParseFilterChain(std::move(node)));
      } else if (IsName("is")) {
        LOOM_ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(")) {
        LOOM_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node) {
    const Token tok = current();
    Next();
    if (tok.value == ".") {
      if (current().type == TokenType::kName) {
        ExprPtr attr = MakeExpr(Expr::Kind::kGetAttr, tok);
        attr->name = current().value;
        Next();
        LOOM_RETURN_IF_ERROR(Attach(attr.get(), std::move(node)));
        return attr;
      }
      if (current().type == TokenType::kInteger) {
        ExprPtr item = MakeExpr(Expr::Kind::kGetItem, tok);
        ExprPtr key = MakeExpr(Expr::Kind::kLiteral, current());
        key->literal = Value(current().int_value);
        Next();
        LOOM_RETURN_IF_ERROR(Attach(item.get(), std::move(node)));
        LOOM_RETURN_IF_ERROR(Attach(item.get(), std::move(key)));
        return item;
      }
      return Unexpected("an attribute name");
    }
    // `[`: an index or a slice.
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (true) {
      if (IsOp(":")) {
        is_slice = true;
        if (++part > 2) return Unexpected("']'");
        Next();
        continue;
      }
      if (IsOp("]")) break;
      if (parts[part] != nullptr) return Unexpected("']'");
      LOOM_ASSIGN_OR_RETURN(parts[part], ParseExpression(/*with_condexpr=*/true));
    }
    Next();
    if (!is_slice) {
      if (parts[0] == nullptr) return ErrorAt(tok, "empty subscript");
      ExprPtr item = MakeExpr(Expr::Kind::kGetItem, tok);
      LOOM_RETURN_IF_ERROR(Attach(item.get(), std::move(node)));
      LOOM_RETURN_IF_ERROR(Attach(item.get(), std::move(parts[0])));
      return item;
    }
    ExprPtr slice = MakeExpr(Expr::Kind::kSlice, tok);
    LOOM_RETURN_IF_ERROR(Attach(slice.get(), std::move(node)));
    for (ExprPtr& p : parts) LOOM_RETURN_IF_ERROR(Attach(slice.get(), std::move(p)));
    return slice;
  }

  // Parses `(args, name=value)` into `call`'s children (after any already there) and kwargs.
  absl::Status ParseCallArgs(Expr* call) {
    LOOM_RETURN_IF_ERROR(ExpectOp("("));
    bool first = true;
    while (!IsOp(")")) {
      if (!first) LOOM_RETURN_IF_ERROR(ExpectOp(","));
      first = false;
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) {
        return ErrorAt(current(), "*args and **kwargs in calls are not supported");
      }
      if (current().type == TokenType::kName && peek().type == TokenType::kOperator &&
          peek().value == "=") {
        std::string key = current().value;
        Next();
        Next();
        LOOM_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(/*with_condexpr=*/true));
        LOOM_RETURN_IF_ERROR(CheckChildDepth(call, value.get()));
        call->kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        if (!call->kwargs.empty()) {
          return ErrorAt(current(), "positional argument follows keyword argument");
        }
        LOOM_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(/*with_condexpr=*/true));
        LOOM_RETURN_IF_ERROR(Attach(call, std::move(value)));
      }
    }
    Next();
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    ExprPtr call = MakeExpr(Expr::Kind::kCall, current());
    LOOM_RETURN_IF_ERROR(Attach(call.get(), std::move(callee)));
    LOOM_RETURN_IF_ERROR(ParseCallArgs(call.get()));
    return call;
  }

  // `| name(args) | name ...`; `input` may be null for filter blocks (the body is the input).
  absl::StatusOr<ExprPtr> ParseFilterChain(ExprPtr input) {
    do {
      Next();  // `|` (or `filter` in a filter block)
      const Token name_tok = current();
      LOOM_ASSIGN_OR_RETURN(std::string name, ExpectName());
      while (IsOp(".")) {
        Next();
        LOOM_ASSIGN_OR_RETURN(std::string part, ExpectName());
        absl::StrAppend(&name, ".", part);
      }
      ExprPtr filter = MakeExpr(Expr::Kind::kFilter, name_tok);
      filter->name = std::move(name);
      LOOM_RETURN_IF_ERROR(Attach(filter.get(), std::move(input)));
      if (IsOp("(")) LOOM_RETURN_IF_ERROR(ParseCallArgs(filter.get()));
      input = std::move(filter);
    } while (IsOp("|"));
    return input;
  }

  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node) {
    Next();  // `is`
    ExprPtr test = MakeExpr(Expr::Kind::kTest, current());
    test->negated = SkipName("not");
    LOOM_ASSIGN_OR_RETURN(test->name, ExpectName());
    while (IsOp(".")) {
      Next();
      LOOM_ASSIGN_OR_RETURN(std::string part, ExpectName());
      absl::StrAppend(&test->name, ".", part);
    }
    LOOM_RETURN_IF_ERROR(Attach(test.get(), std::move(node)));
    if (IsOp("(")) {
      LOOM_RETURN_IF_ERROR(ParseCallArgs(test.get()));
    } else if ((current().type == TokenType::kName || current().type == TokenType::kString ||
                current().type == TokenType::kInteger || current().type == TokenType::kFloat ||
                IsOp("[") || IsOp("{")) &&
               !IsName("else") && !IsName("or") && !IsName("and")) {
      if (IsName("is")) return ErrorAt(current(), "cannot chain multiple tests with 'is'");
      // `x is sameas none`, `x is divisibleby 3`: one primary argument without parentheses.
      LOOM_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
      LOOM_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
      LOOM_RETURN_IF_ERROR(Attach(test.get(), std::move(arg)));
    }
    return test;
  }

  std::vector<Token> tokens_;
  ParserOptions options_;
  size_t index_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<TemplateAst> ParseTemplate(std::string_view source, const ParserOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source, options.lexer));
  Parser parser(std::move(tokens), options);
  return parser.Run();
}

}  // namespace loom::chat
