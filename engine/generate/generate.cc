#include "engine/generate/generate.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/generate/stop_strings.h"

namespace loom::engine {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

absl::StatusOr<GenerateResult> Generate(Backend& backend, const tokenizer::Tokenizer& tokenizer,
                                        KvSequence& kv, std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<bool(const TokenEvent&)>& on_token) {
  LOOM_RETURN_IF_ERROR(options.sampling.Validate());
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  if (kv.size() >= static_cast<int>(prompt.size()))
    kv.Truncate(static_cast<int>(prompt.size()) - 1);
  const int64_t need = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  if (need > kv.capacity()) {
    return absl::OutOfRangeError(
        absl::StrCat("prompt of ", prompt.size(), " tokens plus max_tokens ", options.max_tokens,
                     " exceeds the context of ", kv.capacity(), " tokens"));
  }
  GenerateResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<float> logits;

  auto t0 = std::chrono::steady_clock::now();
  const int chunk = options.prefill_chunk > 0 ? options.prefill_chunk : 512;
  for (size_t pos = kv.size(); pos < prompt.size();) {
    size_t n = std::min<size_t>(chunk, prompt.size() - pos);
    SeqBatch b{&kv, prompt.subspan(pos, n), false};
    LOOM_RETURN_IF_ERROR(backend.Forward({&b, 1}, &logits));
    pos += n;
  }
  result.prefill_seconds = Since(t0);

  std::unique_ptr<grammar::Matcher> matcher;
  std::vector<float> masked;
  if (options.grammar != nullptr) {
    std::shared_ptr<const grammar::TokenIndex> index = options.grammar_index;
    if (index == nullptr) index = grammar::TokenIndex::Build(tokenizer);
    matcher = std::make_unique<grammar::Matcher>(options.grammar, std::move(index));
  }
  sampler::Sampler sampler(options.sampling, options.default_seed);
  tokenizer::StreamDecoder decoder(tokenizer, /*render_special=*/false);
  result.finish_reason = "length";
  size_t emitted = 0;  // bytes of result.text passed to on_token
  auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < options.max_tokens; ++i) {
    if (i > 0) {
      SeqBatch b{&kv, std::span<const int32_t>(&history.back(), 1), false};
      LOOM_RETURN_IF_ERROR(backend.Forward({&b, 1}, &logits));
    }
    std::span<const float> row = logits;
    if (matcher != nullptr) {
      const auto tm = std::chrono::steady_clock::now();
      masked.assign(logits.begin(), logits.end());
      matcher->MaskLogits(masked);
      row = masked;
      result.grammar_seconds += Since(tm);
    }
    const int32_t tok = sampler.Sample(row, history);
    if (matcher != nullptr) {
      const auto ta = std::chrono::steady_clock::now();
      const absl::Status accepted = matcher->Accept(tok);
      if (!accepted.ok()) {
        return absl::InternalError(absl::StrCat("grammar: ", accepted.message()));
      }
      result.grammar_seconds += Since(ta);
    }
    history.push_back(tok);
    if (options.stop_at_eog && tokenizer.IsEog(tok)) {
      result.finish_reason = "stop";
      break;
    }
    result.tokens.push_back(tok);
    result.text += decoder.Feed(tok);
    bool stopped = false;
    size_t release = result.text.size();
    if (!options.stop.empty()) {
      size_t at = FindStop(result.text, options.stop, emitted);
      if (at != std::string::npos) {
        result.text.resize(at);
        release = at;
        stopped = true;
      } else {
        release -= HeldBack(result.text, options.stop);  // may be the start of a stop string
      }
    }
    const bool grammar_done = !stopped && matcher != nullptr && matcher->IsDone();
    if (grammar_done) {
      result.text += decoder.Flush();
      release = result.text.size();
    }
    if (release > emitted) {
      std::string_view delta(result.text.data() + emitted, release - emitted);
      emitted = release;
      if (on_token && !on_token(TokenEvent{tok, delta})) stopped = true;
    }
    if (stopped || grammar_done) {
      result.finish_reason = "stop";
      break;
    }
  }
  if (result.finish_reason == "length") result.text += decoder.Flush();
  if (result.text.size() > emitted && on_token) {
    on_token(TokenEvent{-1, std::string_view(result.text).substr(emitted)});
  }
  result.decode_seconds = Since(t1);
  return result;
}

}  // namespace loom::engine
