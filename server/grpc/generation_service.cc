#include "server/grpc/generation_service.h"

#include <cmath>
#include <mutex>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/grpc/grpc_common.h"

namespace loom::server::grpc_api {
namespace {

absl::Status Invalid(std::string_view message, std::string_view param) {
  return frontend::ApiStatus(absl::StatusCode::kInvalidArgument,
                             absl::StrCat(std::string(param), ": ", std::string(message)), param);
}

std::string NewId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrFormat("gen-%016x%08x", rng(), rng() & 0xffffffffu);
}

float Finite(float lp) { return std::isfinite(lp) ? lp : -9999.0f; }

absl::Status ConvertMessages(const google::protobuf::RepeatedPtrField<loom::v1::ChatMessage>& in,
                             std::vector<chat::ChatMessage>* out) {
  if (in.empty()) return Invalid("at least one message is required", "messages");
  for (const loom::v1::ChatMessage& m : in) {
    std::string role = m.role();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return Invalid(absl::StrCat("unsupported role '", role, "'; use system, user or assistant"),
                     "messages.role");
    }
    out->push_back(chat::ChatMessage{role, m.content()});
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ConvertParams(const loom::v1::GenerationParams& in, frontend::GenerationParams* out) {
  out->model = in.model();
  if (in.has_max_tokens()) {
    if (in.max_tokens() < 1) return Invalid("must be at least 1", "params.max_tokens");
    out->max_tokens = in.max_tokens();
  }
  const loom::v1::SamplingParams& s = in.sampling();
  sampler::SamplingParams& p = out->sampling;
  if (s.has_temperature()) p.temperature = s.temperature();
  if (s.has_top_p()) p.top_p = s.top_p();
  if (s.has_top_k()) p.top_k = s.top_k();
  if (s.has_min_p()) p.min_p = s.min_p();
  if (s.has_repetition_penalty()) p.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) p.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) p.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) p.seed = s.seed();
  if (absl::Status st = p.Validate(); !st.ok()) {
    return frontend::ApiStatus(absl::StatusCode::kInvalidArgument,
                               absl::StrCat("params.sampling: ", st.message()), "params.sampling");
  }
  if (in.stop_size() > frontend::kMaxStopStrings) {
    return Invalid(absl::StrCat("at most ", frontend::kMaxStopStrings, " stop strings"),
                   "params.stop");
  }
  for (const std::string& stop : in.stop()) {
    if (stop.empty()) return Invalid("stop strings must not be empty", "params.stop");
    out->stop.push_back(stop);
  }
  out->n = in.n() == 0 ? 1 : in.n();
  if (out->n < 1 || out->n > frontend::kMaxChoices) {
    return Invalid(absl::StrCat("must be in [1, ", frontend::kMaxChoices, "]"), "params.n");
  }
  if (in.has_logprobs()) {
    if (in.logprobs() < 0 || in.logprobs() > frontend::kMaxTopLogprobs) {
      return Invalid(absl::StrCat("must be in [0, ", frontend::kMaxTopLogprobs, "]"),
                     "params.logprobs");
    }
    out->logprobs = in.logprobs();
    p.top_logprobs = in.logprobs();
  }
  out->ignore_eos = in.ignore_eos();
  out->stream = true;
  using Kind = frontend::OutputConstraint::Kind;
  switch (in.constraint_case()) {
    case loom::v1::GenerationParams::kJsonSchema:
      out->constraint = {Kind::kJsonSchema, in.json_schema(), "params.json_schema"};
      break;
    case loom::v1::GenerationParams::kJsonObject:
      if (in.json_object()) out->constraint = {Kind::kJsonObject, "", "params.json_object"};
      break;
    case loom::v1::GenerationParams::kGrammar:
      out->constraint = {Kind::kGrammar, in.grammar(), "params.grammar"};
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

grpc::Status GenerationService::Chat(grpc::ServerContext* ctx, const loom::v1::ChatRequest* req,
                                     grpc::ServerWriter<loom::v1::GenerateResponse>* writer) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  frontend::GenerationParams params;
  std::vector<chat::ChatMessage> messages;
  absl::Status st = ConvertParams(req->params(), &params);
  if (st.ok()) st = fe_->CheckModel(params.model);
  if (st.ok()) st = ConvertMessages(req->messages(), &messages);
  if (!st.ok()) return ToGrpc(st);
  absl::StatusOr<std::vector<int32_t>> prompt = fe_->ChatPrompt(messages);
  if (!prompt.ok()) return ToGrpc(prompt.status());
  return Generate(ctx, params, {std::move(*prompt)}, "messages", writer);
}

grpc::Status GenerationService::Complete(grpc::ServerContext* ctx,
                                         const loom::v1::CompleteRequest* req,
                                         grpc::ServerWriter<loom::v1::GenerateResponse>* writer) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  frontend::GenerationParams params;
  absl::Status st = ConvertParams(req->params(), &params);
  if (st.ok()) st = fe_->CheckModel(params.model);
  if (!st.ok()) return ToGrpc(st);
  std::vector<int32_t> prompt;
  switch (req->prompt_case()) {
    case loom::v1::CompleteRequest::kText:
      prompt = fe_->engine()->tokenizer().Encode(req->text(), /*add_special=*/true,
                                                 /*parse_special=*/true);
      break;
    case loom::v1::CompleteRequest::kTokens:
      prompt.assign(req->tokens().ids().begin(), req->tokens().ids().end());
      if (absl::Status s = fe_->CheckTokenIds(prompt, "tokens"); !s.ok()) return ToGrpc(s);
      break;
    default:
      return ToGrpc(Invalid("give a text or tokens prompt", "prompt"));
  }
  return Generate(ctx, params, {std::move(prompt)}, "prompt", writer);
}

grpc::Status GenerationService::Generate(grpc::ServerContext* ctx,
                                         const frontend::GenerationParams& params,
                                         const std::vector<std::vector<int32_t>>& prompts,
                                         const char* prompt_param,
                                         grpc::ServerWriter<loom::v1::GenerateResponse>* writer) {
  absl::StatusOr<frontend::Submission> sub =
      fe_->Submit(prompts, params, prompt_param, Deadline(ctx));
  if (!sub.ok()) return ToGrpc(sub.status());
  const std::string id = NewId();
  const std::string& model = fe_->model_names().front();
  const tokenizer::Tokenizer& tok = fe_->engine()->tokenizer();
  loom::v1::GenerateResponse msg;
  PumpResult r = Pump(*sub, ctx, [&](size_t i, const engine::StreamEvent& ev) {
    msg.Clear();
    msg.set_id(id);
    msg.set_model(model);
    msg.set_index(static_cast<int32_t>(i));
    if (ev.token >= 0) {
      msg.add_token_ids(ev.token);
      if (ev.logprobs) {
        loom::v1::Logprobs* lp = msg.add_logprobs();
        auto fill = [&](loom::v1::TokenLogprob* t, const sampler::TokenLogprob& l) {
          t->set_token(l.token);
          t->set_text(tok.TokenToPiece(l.token, /*render_special=*/true));
          t->set_logprob(Finite(l.logprob));
        };
        fill(lp->mutable_chosen(), ev.logprobs->chosen);
        for (const sampler::TokenLogprob& t : ev.logprobs->top) fill(lp->add_top(), t);
      }
    }
    msg.set_text(ev.text);
    if (ev.finished && (ev.finish_reason == "stop" || ev.finish_reason == "length")) {
      msg.set_finish_reason(ev.finish_reason);
    }
    if (msg.token_ids_size() == 0 && msg.text().empty() && msg.finish_reason().empty()) {
      return true;  // nothing to tell the client
    }
    return writer->Write(msg);
  });
  if (!r.status.ok()) return ToGrpc(r.status);
  msg.Clear();
  msg.set_id(id);
  msg.set_model(model);
  loom::v1::Usage* u = msg.mutable_usage();
  u->set_prompt_tokens(sub->prompt_tokens);
  u->set_completion_tokens(r.completion_tokens);
  u->set_cached_prompt_tokens(r.cached_tokens);
  writer->Write(msg);
  return grpc::Status::OK;
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext* ctx,
                                         const loom::v1::TokenizeRequest* req,
                                         loom::v1::TokenizeResponse* res) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  if (absl::Status s = fe_->CheckModel(req->model()); !s.ok()) return ToGrpc(s);
  const tokenizer::Tokenizer& tok = fe_->engine()->tokenizer();
  const bool special = req->has_add_special_tokens() ? req->add_special_tokens() : true;
  std::vector<int32_t> ids;
  switch (req->input_case()) {
    case loom::v1::TokenizeRequest::kText:
      ids = tok.Encode(req->text(), special, /*parse_special=*/true);
      break;
    case loom::v1::TokenizeRequest::kChat: {
      std::vector<chat::ChatMessage> messages;
      if (absl::Status s = ConvertMessages(req->chat().messages(), &messages); !s.ok()) {
        return ToGrpc(s);
      }
      absl::StatusOr<std::string> text = fe_->RenderChat(messages, true);
      if (!text.ok()) return ToGrpc(text.status());
      ids = tok.Encode(*text, special, /*parse_special=*/true);
      break;
    }
    default:
      return ToGrpc(Invalid("give a text or a chat", "input"));
  }
  res->mutable_tokens()->Add(ids.begin(), ids.end());
  res->set_max_model_len(fe_->ContextLength());
  return grpc::Status::OK;
}

grpc::Status GenerationService::Detokenize(grpc::ServerContext* ctx,
                                           const loom::v1::DetokenizeRequest* req,
                                           loom::v1::DetokenizeResponse* res) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  if (absl::Status s = fe_->CheckModel(req->model()); !s.ok()) return ToGrpc(s);
  std::vector<int32_t> ids(req->tokens().begin(), req->tokens().end());
  if (absl::Status s = fe_->CheckTokenIds(ids, "tokens"); !s.ok()) return ToGrpc(s);
  res->set_text(fe_->engine()->tokenizer().Decode(ids, /*render_special=*/true));
  return grpc::Status::OK;
}

grpc::Status GenerationService::ListModels(grpc::ServerContext* ctx,
                                           const loom::v1::ListModelsRequest*,
                                           loom::v1::ListModelsResponse* res) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  loom::v1::Model* m = res->add_models();
  const std::vector<std::string>& names = fe_->model_names();
  m->set_id(names.front());
  for (size_t i = 1; i < names.size(); ++i) {
    if (names[i] != names.front()) m->add_aliases(names[i]);
  }
  m->set_max_model_len(fe_->ContextLength());
  m->set_created(fe_->created());
  m->set_owned_by("loom");
  return grpc::Status::OK;
}

}  // namespace loom::server::grpc_api
