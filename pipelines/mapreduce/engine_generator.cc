#include "pipelines/mapreduce/engine_generator.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/grammar/grammar.h"

namespace loom::pipelines::mapreduce {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);

}  // namespace

absl::StatusOr<std::unique_ptr<EngineGenerator>> EngineGenerator::Create(engine::Engine* engine) {
  if (engine == nullptr) return absl::InvalidArgumentError("no engine");
  absl::StatusOr<std::string> src = engine->model().file().GetString("tokenizer.chat_template");
  if (!src.ok()) {
    return absl::FailedPreconditionError(
        "the model has no chat template (tokenizer.chat_template), which the pipeline needs");
  }
  absl::StatusOr<chat::ChatTemplate> tmpl = chat::ChatTemplate::Parse(*src);
  if (!tmpl.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model's chat template does not parse: ", tmpl.status().message()));
  }
  return std::unique_ptr<EngineGenerator>(new EngineGenerator(engine, std::move(*tmpl)));
}

EngineGenerator::EngineGenerator(engine::Engine* engine, chat::ChatTemplate tmpl)
    : engine_(engine), template_(std::move(tmpl)) {
  const tokenizer::Tokenizer& tok = engine_->tokenizer();
  extras_.bos_token = tok.TokenToPiece(tok.bos_id(), true);
  extras_.eos_token = tok.TokenToPiece(tok.eos_id(), true);
}

absl::StatusOr<std::vector<int32_t>> EngineGenerator::Prompt(
    const std::vector<chat::ChatMessage>& messages) const {
  LOOM_ASSIGN_OR_RETURN(std::string text,
                        template_.Render(messages, /*add_generation_prompt=*/true, extras_));
  return engine_->tokenizer().Encode(text, /*add_special=*/true, /*parse_special=*/true);
}

absl::StatusOr<std::shared_ptr<const grammar::Grammar>> EngineGenerator::CompileGrammar(
    const std::string& gbnf) {
  // Grammar::Parse returns the cached grammar for a text it compiled recently.
  absl::StatusOr<std::shared_ptr<const grammar::Grammar>> g = grammar::Grammar::Parse(gbnf);
  if (!g.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the grammar does not compile: ", g.status().message()));
  }
  return *g;
}

absl::StatusOr<GenerateResult> EngineGenerator::Generate(const GenerateCall& call) {
  auto cancelled = [&] { return call.is_cancelled && call.is_cancelled(); };
  if (cancelled()) return absl::CancelledError("the call was cancelled");
  engine::Request req;
  LOOM_ASSIGN_OR_RETURN(req.prompt, Prompt(call.messages));
  const int ctx = context_length();
  if (static_cast<int>(req.prompt.size()) + call.max_tokens > ctx) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", req.prompt.size(),
                                                   " tokens and max_tokens is ", call.max_tokens,
                                                   ": over the context of ", ctx, " tokens"));
  }
  req.max_tokens = call.max_tokens;
  req.sampling.temperature = call.temperature;
  req.sampling.seed = call.seed;
  req.default_seed = call.seed;
  if (!call.grammar.empty()) {
    LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const grammar::Grammar> g, CompileGrammar(call.grammar));
    req.grammar = std::move(g);
  }
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<engine::RequestStream> stream,
                        engine_->Submit(std::move(req)));
  GenerateResult out;
  engine::StreamEvent ev;
  bool finished = false;
  while (true) {
    bool timed_out = false;
    if (!stream->NextFor(&ev, kPollInterval, &timed_out)) {
      if (!timed_out) break;
      if (!stream->cancelled() && cancelled()) stream->Cancel();
      continue;
    }
    out.text += ev.text;
    if (ev.finished) {
      finished = true;
      out.finish_reason = ev.finish_reason;
      out.prompt_tokens = ev.usage.prompt_tokens;
      out.cached_prompt_tokens = ev.usage.cached_prompt_tokens;
      out.completion_tokens = ev.usage.completion_tokens;
      if (ev.finish_reason == "error") return ev.status;
    }
  }
  if (!finished) return absl::InternalError("the engine stream ended without a final event");
  if (out.finish_reason == "cancelled") return absl::CancelledError("the call was cancelled");
  if (out.finish_reason == "timeout") return absl::DeadlineExceededError("the call timed out");
  return out;
}

absl::StatusOr<int> EngineGenerator::CountTokens(std::string_view text) {
  return static_cast<int>(
      engine_->tokenizer().Encode(text, /*add_special=*/false, /*parse_special=*/false).size());
}

absl::StatusOr<int> EngineGenerator::CountPromptTokens(
    const std::vector<chat::ChatMessage>& messages) {
  LOOM_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, Prompt(messages));
  return static_cast<int>(prompt.size());
}

int EngineGenerator::context_length() const {
  return std::min(engine_->config().max_context, engine_->model().config().context_length);
}

std::string EngineGenerator::name() const { return engine_->model_name(); }

}  // namespace loom::pipelines::mapreduce
