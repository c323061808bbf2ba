// A Generator over a local serving engine (engine/serving): renders the messages with the model's
// chat template (the GGUF's tokenizer.chat_template), tokenizes, submits one engine::Request and
// reads its stream to the end. Calls from several threads run in the engine's continuous batch.
// Grammars come from Grammar::Parse, which keeps recently compiled texts (and their mask caches).
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<EngineGenerator> gen, EngineGenerator::Create(engine));
//   LOOM_ASSIGN_OR_RETURN(GenerateResult r, gen->Generate(call));
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template/chat_template.h"
#include "engine/serving/engine.h"
#include "pipelines/mapreduce/generator.h"

namespace loom::grammar {
class Grammar;
}  // namespace loom::grammar

namespace loom::pipelines::mapreduce {

class EngineGenerator : public Generator {
 public:
  // `engine` must outlive the generator. FailedPrecondition when the model has no chat template;
  // InvalidArgument when it does not parse.
  static absl::StatusOr<std::unique_ptr<EngineGenerator>> Create(engine::Engine* engine);

  // InvalidArgument when the prompt plus max_tokens exceeds the context or the grammar does not
  // compile; Cancelled when call.is_cancelled() turns true; the engine's errors otherwise.
  absl::StatusOr<GenerateResult> Generate(const GenerateCall& call) override;
  absl::StatusOr<int> CountTokens(std::string_view text) override;
  absl::StatusOr<int> CountPromptTokens(const std::vector<chat::ChatMessage>& messages) override;
  // min(the engine's max_context, the model's context length).
  int context_length() const override;
  std::string name() const override;

 private:
  EngineGenerator(engine::Engine* engine, chat::ChatTemplate tmpl);
  absl::StatusOr<std::vector<int32_t>> Prompt(const std::vector<chat::ChatMessage>& messages) const;
  absl::StatusOr<std::shared_ptr<const grammar::Grammar>> CompileGrammar(const std::string& gbnf);

  engine::Engine* const engine_;
  const chat::ChatTemplate template_;
  chat::RenderExtras extras_;
};

}  // namespace loom::pipelines::mapreduce
