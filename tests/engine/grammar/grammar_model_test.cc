// Structured output on the real SmolLM2 model: masks on the real vocabulary equal the reference
// recogniser's; at temperature 1.0, over several seeds, a JSON schema grammar makes Generate()
// and the serving Engine return JSON that parses and has the required keys, finishing with
// "stop" as the closing brace completes the grammar.
#include <cmath>
#include <filesystem>

#include "engine/generate/generate.h"
#include "engine/gguf/gguf.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_impl.h"
#include "engine/grammar/json_schema.h"
#include "engine/serving/engine.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/grammar/reference_recognizer.h"

namespace loom::engine {
namespace {

constexpr char kModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

constexpr char kSchema[] = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 24},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "city": {"enum": ["Paris", "London", "Tokyo", "Lima"]},
    "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    "retired": {"type": "boolean"}
  },
  "required": ["name", "age", "city", "hobbies", "retired"]
})";

std::string ChatPrompt(const std::string& user) {
  return "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + user +
         "<|im_end|>\n<|im_start|>assistant\n";
}

// The text parses as a JSON object that satisfies kSchema.
void ExpectPerson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << text;
  ASSERT_TRUE(j.is_object()) << text;
  for (const char* key : {"name", "age", "city", "hobbies", "retired"}) {
    EXPECT_TRUE(j.contains(key)) << key << " missing: " << text;
  }
  EXPECT_TRUE(j["name"].is_string()) << text;
  ASSERT_TRUE(j["age"].is_number_integer()) << text;
  EXPECT_GE(j["age"].get<int>(), 0);
  EXPECT_LE(j["age"].get<int>(), 120);
  EXPECT_TRUE(j["hobbies"].is_array() && j["hobbies"].size() <= 3) << text;
  EXPECT_TRUE(j["retired"].is_boolean()) << text;
}

// On the real 49,152-token vocabulary (multi-byte pieces, tokens spanning JSON punctuation), the
// masks along a document equal the reference recogniser's verdict on every token.
TEST(GrammarRealVocabTest, MasksEqualTheReference) {
  if (!std::filesystem::exists(kModel)) GTEST_SKIP() << kModel << " is missing";
  auto file = gguf::GgufFile::Open(kModel);
  ASSERT_TRUE(file.ok()) << file.status();
  auto tok = tokenizer::Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto index = grammar::TokenIndex::Build(**tok);
  auto gbnf = grammar::JsonSchemaToGbnf(kSchema);
  ASSERT_TRUE(gbnf.ok()) << gbnf.status();
  auto g = grammar::Grammar::Parse(*gbnf + "# real vocabulary test\n");
  ASSERT_TRUE(g.ok()) << g.status();
  const grammar::internal::ReferenceRecognizer ref(grammar::internal::GrammarImpl::Of(**g).ir());
  const std::string doc =
      "{\n  \"name\": \"Zoë \\\"Z\\\" 東京\",\n  \"age\": 42, \"city\": \"Tokyo\",\n"
      "  \"hobbies\": [\"go\", \"\\u00e9t\u00e9\"],\"retired\":false}";
  grammar::Matcher m(*g, index);
  std::vector<float> logits(index->vocab_size());
  std::string prefix;
  int checked = 0;
  while (prefix.size() < doc.size()) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    m.MaskLogits(logits);
    // Every other step (all of them near the start), against the reference on every token.
    if (checked < 6 || prefix.size() % 2 == 0) {
      const auto chart = ref.Parse(prefix);
      const bool sentence = ref.Extend(chart, "").sentence;
      for (int32_t t = 0; t < index->vocab_size(); ++t) {
        bool expected = false;
        if ((*tok)->IsEog(t)) {
          expected = sentence;
        } else if ((*tok)->GetTokenType(t) == tokenizer::TokenType::kNormal ||
                   (*tok)->GetTokenType(t) == tokenizer::TokenType::kUserDefined) {
          const std::string piece = (*tok)->TokenToPiece(t, false);
          expected = !piece.empty() && ref.Extend(chart, piece).prefix;
        }
        ASSERT_EQ(!std::isinf(logits[t]), expected)
            << "token " << t << " '" << (*tok)->TokenToPiece(t, false) << "' after '" << prefix
            << "'";
      }
      ++checked;
    }
    // The longest allowed token that continues the document, as a tokenizer would.
    int32_t best = -1;
    size_t best_len = 0;
    for (int32_t t = 0; t < index->vocab_size(); ++t) {
      if (std::isinf(logits[t]) || (*tok)->IsEog(t)) continue;
      const std::string piece = (*tok)->TokenToPiece(t, false);
      if (piece.size() > best_len && doc.compare(prefix.size(), piece.size(), piece) == 0) {
        best = t;
        best_len = piece.size();
      }
    }
    ASSERT_GE(best, 0) << "stuck after '" << prefix << "'";
    ASSERT_TRUE(m.Accept(best).ok());
    prefix += (*tok)->TokenToPiece(best, false);
  }
  EXPECT_TRUE(m.IsDone());
  EXPECT_GE(checked, 20);
  const auto stats =
      grammar::internal::GrammarImpl::Of(**g)
          .CacheFor(std::static_pointer_cast<const grammar::internal::TokenIndexImpl>(index))
          ->stats();
  std::printf("%d masks checked; %lld key walks (%lld needed more frames), %lld rechecks\n",
              checked, static_cast<long long>(stats.key_walks),
              static_cast<long long>(stats.deeper_keys),
              static_cast<long long>(stats.uncertain_checks));
}

class GrammarModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << kModel << " is missing";
    auto gbnf = grammar::JsonSchemaToGbnf(kSchema);
    ASSERT_TRUE(gbnf.ok()) << gbnf.status();
    auto g = grammar::Grammar::Parse(*gbnf);
    ASSERT_TRUE(g.ok()) << g.status();
    grammar_ = *g;
  }
  std::shared_ptr<const grammar::Grammar> grammar_;
};

TEST_F(GrammarModelTest, GenerateFollowsTheSchemaAtTemperatureOne) {
  auto model = Model::Load(kModel);
  ASSERT_TRUE(model.ok()) << model.status();
  auto tok = tokenizer::Tokenizer::FromGguf((*model)->file());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto backend = CreateBackend("cpu", **model, {.n_threads = 2});
  ASSERT_TRUE(backend.ok()) << backend.status();
  const std::vector<int32_t> prompt = (*tok)->Encode(
      ChatPrompt("Invent a person. Reply in JSON with name, age, city, hobbies and retired."),
      false, true);
  GenerateOptions opts;
  opts.max_tokens = 256;
  opts.sampling.temperature = 1.0f;
  opts.grammar = grammar_;
  opts.grammar_index = grammar::TokenIndex::Build(**tok);
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    opts.sampling.seed = seed;
    KvSequence kv((*model)->config(), static_cast<int>(prompt.size()) + opts.max_tokens + 1);
    auto r = Generate(**backend, **tok, kv, prompt, opts, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->finish_reason, "stop") << r->text;
    ExpectPerson(r->text);
    std::printf("seed %llu: %s\n", static_cast<unsigned long long>(seed), r->text.c_str());
  }
}

TEST_F(GrammarModelTest, EngineRequestsWithAGrammarFinishWithStop) {
  auto model = Model::Load(kModel);
  ASSERT_TRUE(model.ok()) << model.status();
  EngineConfig cfg;
  cfg.n_threads = 2;
  cfg.max_context = 1024;
  auto engine = Engine::Create(cfg, std::move(*model));
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto any = grammar::Grammar::Parse(grammar::AnyJsonObjectGbnf());
  ASSERT_TRUE(any.ok()) << any.status();
  // Batched: schema-constrained, free-form-object and unconstrained requests together.
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    Request r;
    r.prompt = (*engine)->tokenizer().Encode(
        ChatPrompt("Describe a person as JSON (name, age, city, hobbies, retired)."), false, true);
    r.max_tokens = 256;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    r.top_logprobs = 2;
    r.grammar = seed == 4 ? *any : grammar_;
    auto s = (*engine)->Submit(r);
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  Request plain;
  plain.prompt = (*engine)->tokenizer().Encode("The capital of France is", true, false);
  plain.max_tokens = 8;
  plain.sampling.temperature = 0;
  streams.push_back(*(*engine)->Submit(plain));

  for (size_t i = 0; i < streams.size(); ++i) {
    std::string text, reason;
    StreamEvent ev;
    while (streams[i]->Next(&ev)) {
      text += ev.text;
      if (ev.token >= 0) {
        EXPECT_TRUE(ev.logprobs.has_value() || i == 4);
      }
      if (ev.finished) reason = ev.finish_reason;
    }
    if (i == 4) {
      EXPECT_EQ(reason, "length");
      continue;
    }
    if (i < 3) {
      EXPECT_EQ(reason, "stop") << text;
      ExpectPerson(text);
    } else if (reason == "stop") {  // any object: unbounded strings may also run to max_tokens
      const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
      EXPECT_TRUE(j.is_object()) << text;
    } else {
      EXPECT_EQ(reason, "length");
      EXPECT_EQ(text[0], '{') << text;
    }
  }
}

}  // namespace
}  // namespace loom::engine
