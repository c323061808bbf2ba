#include "server/cli.h"

#include <charconv>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/chat_template/chat_template.h"
#include "engine/generate/generate.h"
#include "engine/model/backend.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/duo_options.h"
#include "server/flags.h"

namespace loom::server {
namespace {

constexpr char kDefaultModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

struct CliOptions {
  std::string model = kDefaultModel;
  std::string backend = "cpu";
  std::string prompt;
  std::string system;
  bool chat = false;
  bool show_stats = true;
  int threads = 0;
  int ctx = 4096;
  DuoOptions duo;  // --duo-pattern / --duo-sparsity, as `loom serve` takes them
  engine::GenerateOptions gen;
};

absl::StatusOr<CliOptions> ParseArgs(const std::vector<std::string>& args, bool chat_mode) {
  CliOptions o;
  o.chat = chat_mode;
  o.gen.sampling.temperature = 0.0f;  // greedy unless asked
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(a + " needs a value");
      return args[++i];
    };
    std::string v;
    if (a == "--chat") {
      o.chat = true;
      continue;
    }
    if (a == "--no-stats") {
      o.show_stats = false;
      continue;
    }
    if (a == "--ignore-eos") {
      o.gen.stop_at_eog = false;
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(v, value());
    auto& s = o.gen.sampling;
    if (a == "--model" || a == "-m") {
      o.model = v;
    } else if (a == "--backend") {
      o.backend = v;
    } else if (a == "--prompt" || a == "-p") {
      o.prompt = v;
    } else if (a == "--system") {
      o.system = v;
    } else if (a == "--stop") {
      o.gen.stop.push_back(v);
    } else if (a == "--max-tokens" || a == "-n") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.gen.max_tokens));
    } else if (a == "--threads" || a == "-t") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.threads));
    } else if (a == "--ctx") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &o.ctx));
    } else if (a == "--temperature") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &s.temperature));
    } else if (a == "--top-k") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &s.top_k));
    } else if (a == "--top-p") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &s.top_p));
    } else if (a == "--min-p") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &s.min_p));
    } else if (a == "--repeat-penalty") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &s.repetition_penalty));
    } else if (a == "--presence-penalty") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &s.presence_penalty));
    } else if (a == "--frequency-penalty") {
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &s.frequency_penalty));
    } else if (a == "--seed") {
      uint64_t seed = 0;
      LOOM_RETURN_IF_ERROR(ParseNumber(a, v, &seed));
      s.seed = seed;
    } else {
      bool duo_flag = false;
      if (a.starts_with("--")) {
        LOOM_ASSIGN_OR_RETURN(duo_flag, ApplyDuoSetting(a.substr(2), v, &o.duo));
      }
      if (!duo_flag) return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a));
    }
  }
  LOOM_RETURN_IF_ERROR(o.duo.Validate());
  if (o.ctx <= 0) return absl::InvalidArgumentError("--ctx must be positive");
  if (o.gen.max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be >= 0");
  LOOM_RETURN_IF_ERROR(o.gen.sampling.Validate());
  return o;
}

// Everything a terminal session needs, loaded once.
struct Session {
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  std::optional<chat::ChatTemplate> chat_template;
  std::unique_ptr<engine::Backend> backend;
  std::shared_ptr<const engine::DuoLayout> duo;  // null: plain attention
  std::unique_ptr<engine::KvSequence> kv;
};

absl::StatusOr<Session> Load(const CliOptions& o) {
  Session s;
  LOOM_ASSIGN_OR_RETURN(s.model, engine::Model::Load(o.model));
  LOOM_ASSIGN_OR_RETURN(s.tokenizer, tokenizer::Tokenizer::FromGguf(s.model->file()));
  if (auto src = s.model->file().GetString("tokenizer.chat_template"); src.ok()) {
    LOOM_ASSIGN_OR_RETURN(s.chat_template, chat::ChatTemplate::Parse(*src));
  }
  LOOM_ASSIGN_OR_RETURN(s.backend,
                        engine::CreateBackend(o.backend, *s.model, {.n_threads = o.threads}));
  LOOM_ASSIGN_OR_RETURN(s.duo, LoadDuoLayout(o.duo, s.model->config()));
  if (s.duo != nullptr) {
    std::fprintf(stderr, "loom: %s\n", DescribeDuo(o.duo, *s.duo, s.model->config()).c_str());
  }
  const int ctx = std::min(o.ctx, s.model->config().context_length);
  s.kv = std::make_unique<engine::KvSequence>(s.model->config(), ctx, s.duo);
  return s;
}

absl::StatusOr<std::string> RenderChat(const Session& s,
                                       const std::vector<chat::ChatMessage>& msgs) {
  if (!s.chat_template) return absl::FailedPreconditionError("the model has no chat template");
  chat::RenderExtras extras;
  extras.bos_token = s.tokenizer->TokenToPiece(s.tokenizer->bos_id(), true);
  extras.eos_token = s.tokenizer->TokenToPiece(s.tokenizer->eos_id(), true);
  return s.chat_template->Render(msgs, /*add_generation_prompt=*/true, extras);
}

absl::StatusOr<engine::GenerateResult> Run(Session& s, const CliOptions& o,
                                           std::span<const int32_t> prompt) {
  auto result = engine::Generate(*s.backend, *s.tokenizer, *s.kv, prompt, o.gen,
                                 [](const engine::TokenEvent& ev) {
                                   std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
                                   std::fflush(stdout);
                                   return true;
                                 });
  if (result.ok() && o.show_stats) {
    const double pf =
        result->prefill_seconds > 0 ? result->prompt_tokens / result->prefill_seconds : 0;
    const double dc =
        result->decode_seconds > 0 ? result->tokens.size() / result->decode_seconds : 0;
    std::fprintf(
        stderr,
        "\n[prefill: %d tokens, %.1f tok/s | decode: %zu tokens, %.1f tok/s | finish: %s]\n",
        result->prompt_tokens, pf, result->tokens.size(), dc, result->finish_reason.c_str());
  }
  return result;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "loom: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  auto opts = ParseArgs(args, /*chat_mode=*/false);
  if (!opts.ok()) return Fail(opts.status());
  if (opts->prompt.empty()) return Fail(absl::InvalidArgumentError("--prompt is required"));
  auto session = Load(*opts);
  if (!session.ok()) return Fail(session.status());
  std::string text = opts->prompt;
  if (opts->chat) {
    std::vector<chat::ChatMessage> msgs;
    if (!opts->system.empty()) msgs.push_back({"system", opts->system});
    msgs.push_back({"user", opts->prompt});
    auto rendered = RenderChat(*session, msgs);
    if (!rendered.ok()) return Fail(rendered.status());
    text = *rendered;
  }
  std::vector<int32_t> ids =
      session->tokenizer->Encode(text, /*add_special=*/true, /*parse_special=*/opts->chat);
  auto result = Run(*session, *opts, ids);
  if (!result.ok()) return Fail(result.status());
  std::printf("\n");
  return 0;
}

int RunChat(const std::vector<std::string>& args) {
  auto opts = ParseArgs(args, /*chat_mode=*/true);
  if (!opts.ok()) return Fail(opts.status());
  if (opts->gen.max_tokens == 256) opts->gen.max_tokens = 512;
  auto session = Load(*opts);
  if (!session.ok()) return Fail(session.status());
  std::fprintf(stderr, "loom chat: %s on %s. Type a message; an empty line or Ctrl-D quits.\n",
               session->model->config().name.c_str(), opts->backend.c_str());
  std::vector<chat::ChatMessage> msgs;
  if (!opts->system.empty()) msgs.push_back({"system", opts->system});
  std::string line;
  std::vector<int32_t> cached;  // the tokens whose K/V the cache holds
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line.empty()) break;
    msgs.push_back({"user", line});
    auto rendered = RenderChat(*session, msgs);
    if (!rendered.ok()) return Fail(rendered.status());
    std::vector<int32_t> ids = session->tokenizer->Encode(*rendered, true, true);
    // Each turn re-renders the whole conversation; the cache keeps the prefix it shares with the
    // tokens already computed.
    size_t keep = 0;
    while (keep < cached.size() && keep + 1 < ids.size() && cached[keep] == ids[keep]) ++keep;
    // Streaming heads keep only sink + recent positions in a ring that later positions overwrite:
    // a cut inside what the cache holds cannot be resumed, so the turn is computed from scratch.
    if (session->duo != nullptr && session->duo->HasStreaming() &&
        keep < static_cast<size_t>(session->kv->size())) {
      keep = 0;
    }
    session->kv->Truncate(static_cast<int>(keep));
    auto result = Run(*session, *opts, ids);
    if (!result.ok()) {
      Fail(result.status());
      msgs.pop_back();
      continue;
    }
    std::printf("\n");
    msgs.push_back({"assistant", result->text});
    cached = ids;
    cached.insert(cached.end(), result->tokens.begin(), result->tokens.end());
    // The last sampled token was never fed back, so the cache holds one fewer.
    cached.resize(std::min<size_t>(cached.size(), session->kv->size()));
  }
  return 0;
}

}  // namespace loom::server
