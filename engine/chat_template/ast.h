// Syntax tree of a parsed chat template: expressions (Expr) and statements (Node). Produced by
// parser.h, walked by evaluator.h.
//
//   // `{{ message['role'] | upper }}` parses to
//   //   Node{kOutput, expr = Expr{kFilter, name = "upper",
//   //                             children = {Expr{kGetItem, children = {Name message,
//   //                                                                   Literal 'role'}}}}}
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat_template/value.h"

namespace loom::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // children
    kTuple,     // children
    kDict,      // children: key0, value0, key1, value1, ...
    kGetAttr,   // children[0].name
    kGetItem,   // children[0][children[1]]
    kSlice,     // children[0][children[1]:children[2]:children[3]] (null child = omitted)
    kCall,      // children[0](children[1..], kwargs)
    kFilter,    // children[0] | name(children[1..], kwargs)
    kTest,      // children[0] is [not] name(children[1..])
    kUnary,     // name = "-", "+" or "not"; children[0]
    kBinary,    // children[0] name children[1]; name = "+", "-", "*", "/", "//", "%", "**", "~"
    kAnd,       // children[0] and children[1]
    kOr,        // children[0] or children[1]
    kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ...
    kCondExpr,  // children[1] if children[0] else children[2] (children[2] may be null)
  };

  Kind kind = Kind::kLiteral;
  int line = 0;
  int column = 0;
  int depth = 1;  // height of the subtree, bounded by ParserOptions::max_nesting_depth
  Value literal;
  std::string name;
  bool negated = false;  // kTest: `is not`
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: "==", "!=", "<", "<=", ">", ">=", "in", "notin"
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // conditions[i] -> bodies[i]; else_body
    kFor,       // for targets in expr [if filter] body [else else_body]
    kSet,       // set targets = expr, or set targets[0].attribute = expr
    kSetBlock,  // set targets[0] [| filters] body endset
    kMacro,     // macro name(params = defaults) body
    kBreak,
    kContinue,
    kFilterBlock,  // filter <filter chain applied to body> (expr holds the chain; input is null)
    kScope,        // body rendered as is ({% generation %} blocks)
  };

  Kind kind = Kind::kText;
  int line = 0;
  int column = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;  // kFor: loop filter; kSetBlock: optional filter chain
  std::vector<std::string> targets;
  std::string attribute;            // kSet on a namespace: `set ns.attribute = ...`
  std::vector<ExprPtr> conditions;  // kIf
  std::vector<NodeList> bodies;     // kIf: one per condition
  NodeList body;
  NodeList else_body;
  std::string name;                 // kMacro
  std::vector<std::string> params;  // kMacro
  std::vector<ExprPtr> defaults;    // kMacro: one per param, null when none
};

struct TemplateAst {
  NodeList body;
};

}  // namespace loom::chat
