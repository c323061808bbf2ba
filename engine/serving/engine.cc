#include "engine/serving/engine.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/generate/stop_strings.h"

namespace loom::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

absl::Status EngineConfig::Validate() const {
  if (max_context <= 0) return absl::InvalidArgumentError("max_context must be positive");
  if (max_num_seqs <= 0) return absl::InvalidArgumentError("max_num_seqs must be positive");
  if (max_batched_tokens < max_num_seqs) {
    return absl::InvalidArgumentError("max_batched_tokens must be at least max_num_seqs");
  }
  if (max_waiting < 0) return absl::InvalidArgumentError("max_waiting must be >= 0");
  if (kv_cache_bytes <= 0) return absl::InvalidArgumentError("kv_cache_bytes must be positive");
  if (max_tokens_cap <= 0) return absl::InvalidArgumentError("max_tokens_cap must be positive");
  if (n_threads < 0) return absl::InvalidArgumentError("n_threads must be >= 0");
  return absl::OkStatus();
}

// ---- RequestStream ------------------------------------------------------------------------------

RequestStream::~RequestStream() = default;

void RequestStream::Push(StreamEvent ev) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ev.finished) done_ = true;
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

bool RequestStream::Next(StreamEvent* ev) {
  bool timed_out = false;
  return NextFor(ev, std::chrono::milliseconds::max(), &timed_out);
}

bool RequestStream::NextFor(StreamEvent* ev, std::chrono::milliseconds timeout, bool* timed_out) {
  std::unique_lock<std::mutex> lock(mu_);
  *timed_out = false;
  auto ready = [&] { return !events_.empty() || drained_; };
  if (timeout == std::chrono::milliseconds::max()) {
    cv_.wait(lock, ready);
  } else if (!cv_.wait_for(lock, timeout, ready)) {
    *timed_out = true;
    return false;
  }
  if (events_.empty()) return false;  // the final event was already read
  *ev = std::move(events_.front());
  events_.pop_front();
  if (ev->finished) drained_ = true;
  return true;
}

// ---- Engine -------------------------------------------------------------------------------------

struct Engine::Sequence {
  uint64_t id = 0;
  Request req;
  std::shared_ptr<RequestStream> stream;
  std::unique_ptr<KvSequence> kv;
  int64_t kv_bytes = 0;
  std::vector<int32_t> tokens;  // prompt, then generated
  int n_prompt = 0;
  std::unique_ptr<sampler::Sampler> sampler;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::string text;       // generated text so far (cut at a stop string)
  size_t released = 0;    // bytes of `text` already sent
  int n_generated = 0;
  Clock::time_point arrival, scheduled, first_token, last_token;
  std::vector<double> itl;
};

Engine::Engine(const EngineConfig& config, std::unique_ptr<Model> model)
    : config_(config), model_(std::move(model)) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineConfig& config,
                                                       std::unique_ptr<Model> model) {
  LOOM_RETURN_IF_ERROR(config.Validate());
  if (model == nullptr) return absl::InvalidArgumentError("no model");
  std::unique_ptr<Engine> e(new Engine(config, std::move(model)));
  LOOM_ASSIGN_OR_RETURN(e->tokenizer_, tokenizer::Tokenizer::FromGguf(e->model_->file()));
  LOOM_ASSIGN_OR_RETURN(e->backend_, CreateBackend(config.backend, *e->model_,
                                                   {.n_threads = config.n_threads}));
  e->loop_ = std::thread([raw = e.get()] { raw->Loop(); });
  return e;
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) loop_.join();
}

std::string Engine::model_name() const {
  return model_->config().name.empty() ? "loom" : model_->config().name;
}

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Submit(Request request) {
  const int vocab = model_->config().vocab_size;
  const int context = std::min(config_.max_context, model_->config().context_length);
  if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", t, " is out of range [0, ",
                                                     vocab, ")"));
    }
  }
  if (request.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  if (request.max_tokens > config_.max_tokens_cap) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", request.max_tokens,
                                                   " exceeds the limit of ",
                                                   config_.max_tokens_cap));
  }
  const int64_t need = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  if (need > context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "this model's maximum context length is ", context, " tokens; the request has ",
        request.prompt.size(), " prompt tokens and max_tokens ", request.max_tokens));
  }
  LOOM_RETURN_IF_ERROR(request.sampling.Validate());
  if (request.top_logprobs > 20) return absl::InvalidArgumentError("top_logprobs must be <= 20");
  const int64_t kv_bytes = need * model_->config().n_layers * model_->config().kv_dim() * 2 * 2;
  if (kv_bytes > config_.kv_cache_bytes) {
    return absl::InvalidArgumentError("the request needs more KV cache than the server has");
  }

  auto seq = std::make_unique<Sequence>();
  seq->req = std::move(request);
  seq->kv_bytes = kv_bytes;
  seq->arrival = Clock::now();
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stopping_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(waiting_.size()) >= config_.max_waiting) {
      return absl::ResourceExhaustedError("the request queue is full; retry later");
    }
    seq->id = next_id_++;
    stream.reset(new RequestStream(seq->id));
    seq->stream = stream;
    waiting_.push_back(std::move(seq));
    stats_.num_waiting = static_cast<int>(waiting_.size());
  }
  cv_.notify_all();
  return stream;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool Engine::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  const bool done = cv_.wait_for(lock, timeout, [&] {
    return waiting_.empty() && stats_.num_running == 0;
  });
  if (!done) {
    for (auto& s : waiting_) s->stream->Cancel();
    cancel_all_ = true;
  }
  cv_.notify_all();
  return done;
}

void Engine::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !running_.empty(); });
      if (stopping_) break;
    }
    StepOnce();
  }
  // Shutting down: everything still here ends as cancelled.
  std::deque<std::unique_ptr<Sequence>> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(waiting_);
  }
  for (auto& s : waiting) s->stream->Cancel();
  for (auto& s : running_) s->stream->Cancel();
  for (auto& s : waiting) running_.push_back(std::move(s));
  for (auto& s : running_) Finish(*s, "cancelled", absl::OkStatus());
  running_.clear();
}

void Engine::Finish(Sequence& s, const std::string& reason, const absl::Status& status) {
  if (reason == "length" || reason == "stop") s.text += s.decoder ? s.decoder->Flush() : "";
  StreamEvent ev;
  ev.finished = true;
  ev.finish_reason = reason;
  ev.status = status;
  if (s.text.size() > s.released && (reason == "length" || reason == "stop")) {
    ev.text = s.text.substr(s.released);
    s.released = s.text.size();
  }
  ev.usage.prompt_tokens = s.n_prompt > 0 ? s.n_prompt : static_cast<int>(s.req.prompt.size());
  ev.usage.completion_tokens = s.n_generated;
  s.stream->Push(std::move(ev));
  kv_bytes_in_use_ -= s.kv ? s.kv_bytes : 0;
  s.kv.reset();
  if (on_finished_) {
    const auto now = Clock::now();
    RequestTimings t;
    t.finish_reason = reason;
    t.prompt_tokens = static_cast<int>(s.req.prompt.size());
    t.completion_tokens = s.n_generated;
    t.queue_seconds = s.scheduled == Clock::time_point() ? Seconds(s.arrival, now)
                                                         : Seconds(s.arrival, s.scheduled);
    t.ttft_seconds = s.n_generated > 0 ? Seconds(s.arrival, s.first_token) : 0;
    t.e2e_seconds = Seconds(s.arrival, now);
    t.inter_token_seconds = std::move(s.itl);
    on_finished_(t);
  }
}

bool Engine::StepOnce() {
  const ModelConfig& mc = model_->config();
  const auto now = Clock::now();
  // 1. Admit waiting requests while there is room in the batch and the KV budget (FCFS).
  std::vector<std::unique_ptr<Sequence>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!waiting_.empty()) {
      Sequence& s = *waiting_.front();
      if (s.stream->cancelled() || s.stream.use_count() == 1) {
        dropped.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
        continue;
      }
      if (static_cast<int>(running_.size()) >= config_.max_num_seqs ||
          kv_bytes_in_use_ + s.kv_bytes > config_.kv_cache_bytes) {
        break;
      }
      std::unique_ptr<Sequence> seq = std::move(waiting_.front());
      waiting_.pop_front();
      seq->scheduled = now;
      seq->n_prompt = static_cast<int>(seq->req.prompt.size());
      seq->tokens = seq->req.prompt;
      seq->kv = std::make_unique<KvSequence>(mc, seq->n_prompt + seq->req.max_tokens);
      kv_bytes_in_use_ += seq->kv_bytes;
      seq->sampler = std::make_unique<sampler::Sampler>(seq->req.sampling, seq->req.default_seed);
      seq->decoder = std::make_unique<tokenizer::StreamDecoder>(*tokenizer_, false);
      stats_.prompt_tokens_total += seq->n_prompt;
      running_.push_back(std::move(seq));
    }
    stats_.num_waiting = static_cast<int>(waiting_.size());
  }
  for (auto& s : dropped) Finish(*s, "cancelled", absl::OkStatus());  // outside the lock

  // 2. Cancellations, dropped streams and deadlines end sequences before they cost a step.
  const bool cancel_all = cancel_all_.load();
  for (auto& s : running_) {
    if (cancel_all || s->stream->cancelled() || s->stream.use_count() == 1) {
      Finish(*s, "cancelled", absl::OkStatus());
      s.reset();
    } else if (s->req.deadline && now > *s->req.deadline) {
      Finish(*s, "timeout", absl::DeadlineExceededError("the request timed out"));
      s.reset();
    }
  }
  std::erase(running_, nullptr);

  // 3. Plan: every decoding sequence gets its one token, then prompt chunks fill the budget.
  std::vector<SeqBatch> batch;
  std::vector<Sequence*> owners;
  int budget = config_.max_batched_tokens;
  for (auto& s : running_) {
    if (s->kv->size() >= s->n_prompt) {  // decoding: feed the last sampled token
      batch.push_back({s->kv.get(), std::span<const int32_t>(&s->tokens.back(), 1), false});
      owners.push_back(s.get());
      --budget;
    }
  }
  for (auto& s : running_) {
    if (budget <= 0) break;
    const int done = s->kv->size();
    if (done < s->n_prompt) {
      const int n = std::min(budget, s->n_prompt - done);
      batch.push_back({s->kv.get(), std::span<const int32_t>(s->tokens).subspan(done, n), false});
      owners.push_back(s.get());
      budget -= n;
    }
  }
  if (batch.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.num_running = static_cast<int>(running_.size());
    return false;
  }

  // 4. One forward pass for the whole batch.
  absl::Status st = backend_->Forward(batch, &logits_);
  const auto after = Clock::now();
  int64_t generated = 0;
  for (size_t i = 0; i < owners.size(); ++i) {
    Sequence& s = *owners[i];
    if (!st.ok()) {
      Finish(s, "error", st);
      s.stream.reset();
      continue;
    }
    if (s.kv->size() < s.n_prompt) continue;  // mid-prompt chunk: nothing to sample yet
    std::span<const float> row(logits_.data() + i * mc.vocab_size, mc.vocab_size);
    const int32_t tok = s.sampler->Sample(row, s.tokens);
    StreamEvent ev;
    ev.token = tok;
    if (s.req.top_logprobs >= 0) ev.logprobs = sampler::Logprobs(row, tok, s.req.top_logprobs);
    if (s.n_generated == 0) {
      s.first_token = after;
    } else {
      s.itl.push_back(Seconds(s.last_token, after));
    }
    s.last_token = after;
    ++generated;
    std::string reason;
    if (s.req.stop_at_eog && tokenizer_->IsEog(tok)) {
      reason = "stop";
    } else {
      s.tokens.push_back(tok);
      ++s.n_generated;
      s.text += s.decoder->Feed(tok);
      size_t release = s.text.size();
      if (!s.req.stop.empty()) {
        const size_t at = FindStop(s.text, s.req.stop, s.released);
        if (at != std::string::npos) {
          s.text.resize(at);
          release = at;
          reason = "stop";
        } else {
          release -= HeldBack(s.text, s.req.stop);
        }
      }
      if (reason.empty() && s.n_generated >= s.req.max_tokens) reason = "length";
      if (release > s.released && reason.empty()) {
        ev.text = s.text.substr(s.released, release - s.released);
        s.released = release;
      }
      if (reason.empty()) {
        s.stream->Push(std::move(ev));
        continue;
      }
      // The final event carries this token's text and logprobs too.
      StreamEvent last = std::move(ev);
      if (reason == "stop") s.decoder->Reset();
      if (s.text.size() > s.released) {
        last.text += s.text.substr(s.released);
        s.released = s.text.size();
      }
      s.stream->Push(std::move(last));
    }
    Finish(s, reason, absl::OkStatus());
    s.stream.reset();
  }
  for (auto& s : running_) {
    if (s->stream == nullptr) s.reset();
  }
  std::erase(running_, nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.num_running = static_cast<int>(running_.size());
    stats_.generation_tokens_total += generated;
    stats_.kv_cache_usage = static_cast<double>(kv_bytes_in_use_) / config_.kv_cache_bytes;
    ++stats_.steps;
  }
  cv_.notify_all();  // Drain() waits on this
  return true;
}

}  // namespace loom::engine
