// Grammar benchmark (not a test): structured output's cost on the real model and vocabulary.
//  1. Decode tok/s constrained by a JSON schema vs unconstrained, on the same chat prompts in the
//     same run (greedy; each unconstrained run generates as many tokens as its constrained twin,
//     ignoring end-of-generation). The first constrained pass uses a freshly compiled grammar
//     (cold mask caches); later passes reuse it (warm), as a server does for a repeated schema.
//  2. Matcher::MaskLogits latency per step (49k-token vocabulary), replaying the constrained
//     outputs: cold (fresh grammar) and warm.
// Writes JSON (bench/results/grammar.json by default).
//
//   build/bench/grammar/bench_grammar --model models/SmolLM2-135M-Instruct.Q4_1.gguf --threads 1
//       [--schema schema.json] [--max-tokens 160] [--passes 5] [--out bench/results/grammar.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/generate/generate.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/json_schema.h"
#include "engine/model/backend.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using loom::engine::GenerateOptions;
using loom::engine::GenerateResult;

constexpr char kSchema[] = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string"},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "email": {"type": "string"},
    "address": {
      "type": "object",
      "properties": {"street": {"type": "string"}, "city": {"type": "string"},
                     "country": {"type": "string"}},
      "required": ["street", "city", "country"]
    },
    "skills": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    "employed": {"type": "boolean"}
  },
  "required": ["name", "age", "email", "address", "skills", "employed"]
})";

const char* const kPrompts[] = {
    "Invent a software engineer and describe them as JSON.",
    "Give me a JSON record for a fictional teacher living in Lyon.",
    "Create a JSON profile of a retired pilot, with address and skills.",
    "Describe a random person as JSON: name, age, email, address, skills, employed.",
};

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

nlohmann::json Summary(std::vector<double> v) {
  nlohmann::json j;
  if (v.empty()) return j;
  std::sort(v.begin(), v.end());
  auto q = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))]; };
  j["n"] = v.size();
  j["median_ms"] = q(0.5);
  j["p90_ms"] = q(0.9);
  j["p99_ms"] = q(0.99);
  j["max_ms"] = v.back();
  j["mean_ms"] = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  return j;
}

void Print(const char* what, const nlohmann::json& s) {
  std::printf("%s: n=%d median %.4f ms, p90 %.4f, p99 %.4f, max %.3f, mean %.4f\n", what,
              s["n"].get<int>(), s["median_ms"].get<double>(), s["p90_ms"].get<double>(),
              s["p99_ms"].get<double>(), s["max_ms"].get<double>(), s["mean_ms"].get<double>());
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string out_path = "bench/results/grammar.json";
  std::string schema_path;  // default: kSchema
  int threads = 1, max_tokens = 160, passes = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--model") {
      model_path = v;
    } else if (a == "--out") {
      out_path = v;
    } else if (a == "--threads") {
      threads = std::atoi(v);
    } else if (a == "--max-tokens") {
      max_tokens = std::atoi(v);
    } else if (a == "--passes") {
      passes = std::atoi(v);
    } else if (a == "--schema") {
      schema_path = v;
    }
  }
  std::string schema = kSchema;
  if (!schema_path.empty()) {
    std::ifstream f(schema_path);
    schema.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  auto model = loom::engine::Model::Load(model_path);
  if (!model.ok()) {
    std::fprintf(stderr, "bench_grammar: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  auto tok = loom::tokenizer::Tokenizer::FromGguf((*model)->file());
  auto backend = loom::engine::CreateBackend("cpu", **model, {.n_threads = threads});
  if (!tok.ok() || !backend.ok()) return 1;

  auto t0 = Clock::now();
  const auto index = loom::grammar::TokenIndex::Build(**tok);
  const double index_ms = Ms(t0, Clock::now());
  auto gbnf = loom::grammar::JsonSchemaToGbnf(schema);
  if (!gbnf.ok()) {
    std::fprintf(stderr, "bench_grammar: %s\n", std::string(gbnf.status().message()).c_str());
    return 1;
  }
  // A distinct comment per compile gives a fresh grammar (Parse shares identical texts).
  int compiles = 0;
  auto compile = [&]() {
    auto g = loom::grammar::Grammar::Parse(*gbnf + "# compile " + std::to_string(compiles++));
    if (!g.ok()) std::abort();
    return *g;
  };
  t0 = Clock::now();
  std::shared_ptr<const loom::grammar::Grammar> grammar = compile();
  const double compile_ms = Ms(t0, Clock::now());
  std::printf("vocab %d tokens: index %.1f ms; schema -> grammar %.2f ms; threads %d\n",
              index->vocab_size(), index_ms, compile_ms, threads);

  std::vector<std::vector<int32_t>> prompts;
  for (const char* p : kPrompts) {
    prompts.push_back((*tok)->Encode(
        std::string(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n") +
            p + "<|im_end|>\n<|im_start|>assistant\n",
        false, true));
  }
  auto run = [&](const std::vector<int32_t>& prompt, const GenerateOptions& opts) {
    loom::engine::KvSequence kv((*model)->config(),
                                static_cast<int>(prompt.size()) + opts.max_tokens + 1);
    auto r = loom::engine::Generate(**backend, **tok, kv, prompt, opts, nullptr);
    if (!r.ok()) {
      std::fprintf(stderr, "generate: %s\n", std::string(r.status().message()).c_str());
      std::exit(1);
    }
    return *r;
  };

  GenerateOptions base;
  base.sampling.temperature = 0;
  base.max_tokens = max_tokens;
  run(prompts[0], base);  // warm-up (pages in the weights)

  nlohmann::json passes_json = nlohmann::json::array();
  int64_t warm_c_tokens = 0, warm_u_tokens = 0;
  double warm_c_seconds = 0, warm_u_seconds = 0, warm_g_seconds = 0;
  std::vector<std::vector<int32_t>> outputs;
  std::vector<std::string> texts;
  for (int pass = 0; pass < passes; ++pass) {
    int64_t c_tokens = 0, u_tokens = 0;
    double c_seconds = 0, u_seconds = 0, g_seconds = 0;
    for (const auto& prompt : prompts) {
      GenerateOptions c = base;
      c.grammar = grammar;
      c.grammar_index = index;
      const GenerateResult rc = run(prompt, c);
      GenerateOptions u = base;
      u.stop_at_eog = false;
      u.max_tokens = static_cast<int>(rc.tokens.size()) + 1;  // +1: the final EOG step, if any
      const GenerateResult ru = run(prompt, u);
      c_tokens += rc.tokens.size();
      c_seconds += rc.decode_seconds;
      g_seconds += rc.grammar_seconds;
      u_tokens += ru.tokens.size();
      u_seconds += ru.decode_seconds;
      if (pass == 0) {
        outputs.push_back(rc.tokens);
        texts.push_back(rc.text);
      }
    }
    if (pass > 0) {
      warm_c_tokens += c_tokens;
      warm_c_seconds += c_seconds;
      warm_g_seconds += g_seconds;
      warm_u_tokens += u_tokens;
      warm_u_seconds += u_seconds;
    }
    const double c_tps = c_tokens / c_seconds, u_tps = u_tokens / u_seconds;
    std::printf(
        "pass %d (%s): constrained %.1f tok/s, unconstrained %.1f tok/s, ratio %.3f "
        "(grammar %.1f%% of constrained decode time)\n",
        pass, pass == 0 ? "cold" : "warm", c_tps, u_tps, c_tps / u_tps,
        100 * g_seconds / c_seconds);
    passes_json.push_back({{"cache", pass == 0 ? "cold" : "warm"},
                           {"constrained_tokens", c_tokens},
                           {"constrained_tok_s", c_tps},
                           {"unconstrained_tokens", u_tokens},
                           {"unconstrained_tok_s", u_tps},
                           {"ratio", c_tps / u_tps},
                           {"grammar_share_of_decode", g_seconds / c_seconds}});
  }
  nlohmann::json warm_json;
  if (warm_c_seconds > 0) {
    const double c_tps = warm_c_tokens / warm_c_seconds, u_tps = warm_u_tokens / warm_u_seconds;
    std::printf(
        "warm passes together: constrained %.1f tok/s, unconstrained %.1f tok/s, ratio "
        "%.3f, overhead %.1f%% (grammar %.2f%% of constrained decode time)\n",
        c_tps, u_tps, c_tps / u_tps, 100 * (1 - c_tps / u_tps),
        100 * warm_g_seconds / warm_c_seconds);
    warm_json = {{"constrained_tok_s", c_tps},
                 {"unconstrained_tok_s", u_tps},
                 {"ratio", c_tps / u_tps},
                 {"overhead", 1 - c_tps / u_tps},
                 {"grammar_share_of_decode", warm_g_seconds / warm_c_seconds}};
  }
  for (const std::string& t : texts) std::printf("  %s\n", t.c_str());

  // MaskLogits latency, replaying the constrained outputs on fresh matchers.
  std::vector<float> logits(index->vocab_size());
  std::mt19937 rng(1);
  for (float& x : logits) x = std::normal_distribution<float>(0, 3)(rng);
  std::vector<float> scratch;
  auto replay = [&](const std::shared_ptr<const loom::grammar::Grammar>& g) {
    std::vector<double> ms;
    for (const auto& out : outputs) {
      loom::grammar::Matcher m(g, index);
      for (const int32_t t : out) {
        scratch = logits;
        const auto a = Clock::now();
        m.MaskLogits(scratch);
        ms.push_back(Ms(a, Clock::now()));
        if (!m.Accept(t).ok()) std::abort();
      }
    }
    return ms;
  };
  const nlohmann::json cold = Summary(replay(compile()));
  std::vector<double> warm_ms;
  const auto warm_grammar = compile();
  replay(warm_grammar);
  for (int i = 0; i < 3; ++i) {
    const auto ms = replay(warm_grammar);
    warm_ms.insert(warm_ms.end(), ms.begin(), ms.end());
  }
  const nlohmann::json warm = Summary(warm_ms);
  Print("MaskLogits cold", cold);
  Print("MaskLogits warm", warm);

  nlohmann::json result;
  result["model"] = model_path;
  result["threads"] = threads;
  result["vocab_size"] = index->vocab_size();
  result["token_index_build_ms"] = index_ms;
  result["schema_to_grammar_ms"] = compile_ms;
  result["schema"] = nlohmann::json::parse(schema);
  result["decode"] = passes_json;
  result["decode_warm"] = warm_json;
  result["mask_logits"] = {{"cold", cold}, {"warm", warm}};
  result["outputs"] = texts;
  std::ofstream(out_path) << result.dump(2) << "\n";
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
