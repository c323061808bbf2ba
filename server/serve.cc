#include "server/serve.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "engine/model/model.h"
#include "engine/serving/engine.h"
#include "server/duo_options.h"
#include "server/flags.h"
#include "server/frontend/frontend.h"
#include "server/grpc/grpc_server.h"
#include "server/http/http_server.h"
#include "server/http/openai_server.h"
#include "server/metrics/metrics.h"
#include "server/pipelines/mapreduce_api.h"

namespace loom::server {

const char kServeUsage[] =
    "  serve     the OpenAI-compatible HTTP server (GET /health is 503 while the model loads)\n"
    "            and the gRPC server (loom.v1, KServe v2, health, reflection) on one engine\n"
    "            [--model PATH] [--served-model-name NAME] [--host H] [--port P] [--threads N]\n"
    "            [--grpc-port P (0: any, -1: off)] [--grpc-threads N]\n"
    "            [--grpc-max-message-bytes N] [--mapreduce-max-document-bytes N]\n"
    "            [--mapreduce-max-parallel N] [--load-delay-ms N (testing)]\n"
    "            [--http-threads N] [--api-key KEY | --api-key-file PATH] [--max-body-bytes N]\n"
    "            [--max-prompt-tokens N] [--max-tokens-cap N] [--max-concurrent-requests N]\n"
    "            [--max-waiting N] [--request-timeout-s S] [--drain-timeout-s S]\n"
    "            [--max-num-seqs N] [--max-batched-tokens N] [--kv-cache-mb N]\n"
    "            [--max-model-len N] [--backend cpu] [--config FILE]\n"
    "            [--duo-pattern FILE.json (DuoAttention; default off)] [--duo-sparsity S]\n"
    "            [--duo-prefix-snapshots N (default 16; 0: no prefix caching with streaming "
    "heads)]\n"
    "            defaults: 127.0.0.1:8080, engine threads one per core, 1024 HTTP threads,\n"
    "            8 MiB bodies, 256 concurrent requests, 256 waiting, max_tokens <= 4096,\n"
    "            600 s per request (0: none), 30 s drain, 16 seqs, 256 batched tokens,\n"
    "            1024 MiB KV cache, the model's context; no API key, no prompt limit\n"
    "            but the context, DuoAttention off (sparsity 0.5 once a pattern is given).\n"
    "            --config FILE: a JSON object of the same settings\n"
    "            ({\"port\": 8080, \"max_num_seqs\": 8}; nested objects are flattened);\n"
    "            flags override it.\n";

namespace {

absl::StatusOr<std::string> ReadApiKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--api-key-file: cannot read ", path));
  std::string line;
  std::getline(in, line);
  std::string key(absl::StripAsciiWhitespace(line));
  if (key.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " holds no API key"));
  return key;
}

// Applies one setting (`name` without the leading dashes, '-' or '_' alike).
absl::Status Apply(std::string name, const std::string& v, ServeOptions* o) {
  name = absl::StrReplaceAll(name, {{"_", "-"}});
  const std::string flag = absl::StrCat("--", name);
  auto& h = o->http;
  auto& e = o->engine;
  if (name == "model" || name == "m") {
    e.model = v;
  } else if (name == "served-model-name") {
    e.served_model_name = v;
  } else if (name == "backend") {
    e.backend = v;
  } else if (name == "host") {
    h.host = v;
  } else if (name == "port") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &h.port));
  } else if (name == "threads" || name == "t") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.threads));
  } else if (name == "http-threads") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &h.threads));
  } else if (name == "api-key") {
    h.api_key = v;
  } else if (name == "api-key-file") {
    LOOM_ASSIGN_OR_RETURN(h.api_key, ReadApiKeyFile(v));
  } else if (name == "max-body-bytes") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &h.max_body_bytes));
  } else if (name == "max-prompt-tokens") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &h.max_prompt_tokens));
  } else if (name == "max-tokens-cap") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.max_tokens_cap));
  } else if (name == "max-concurrent-requests") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &h.max_concurrent_requests));
  } else if (name == "max-waiting") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.max_waiting));
  } else if (name == "request-timeout-s") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &h.request_timeout_s));
  } else if (name == "drain-timeout-s") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &h.drain_timeout_s));
  } else if (name == "max-num-seqs") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.max_num_seqs));
  } else if (name == "max-batched-tokens") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.max_batched_tokens));
  } else if (name == "kv-cache-mb") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.kv_cache_mb));
  } else if (name == "grpc-port") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &o->grpc.port));
  } else if (name == "grpc-threads") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &o->grpc.threads));
  } else if (name == "grpc-max-message-bytes") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &o->grpc.max_message_bytes));
  } else if (name == "mapreduce-max-document-bytes") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &o->pipelines.mapreduce_max_document_bytes));
  } else if (name == "mapreduce-max-parallel") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &o->pipelines.mapreduce_max_parallel));
  } else if (name == "load-delay-ms") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.load_delay_ms));
  } else if (name == "max-model-len") {
    LOOM_RETURN_IF_ERROR(ParseNumber(flag, v, &e.max_model_len));
  } else {
    LOOM_ASSIGN_OR_RETURN(const bool duo_setting, ApplyDuoSetting(name, v, &e.duo));
    if (!duo_setting) return absl::InvalidArgumentError(absl::StrCat("unknown setting ", flag));
  }
  return absl::OkStatus();
}

absl::Status ApplyJson(const nlohmann::json& obj, ServeOptions* o) {
  for (const auto& [key, value] : obj.items()) {
    if (value.is_object()) {
      LOOM_RETURN_IF_ERROR(ApplyJson(value, o));
      continue;
    }
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_number() || value.is_boolean()) {
      text = value.dump();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("config: '", key, "' must be a string or a number"));
    }
    LOOM_RETURN_IF_ERROR(Apply(key, text, o));
  }
  return absl::OkStatus();
}

absl::Status ApplyConfigFile(const std::string& path, ServeOptions* o) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--config: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  nlohmann::json obj = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded() || !obj.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  return ApplyJson(obj, o);
}

absl::Status Validate(const ServeOptions& o) {
  if (o.http.port < 0 || o.http.port > 65535) {
    return absl::InvalidArgumentError("--port must be in [0, 65535]");
  }
  if (o.http.threads < 1) return absl::InvalidArgumentError("--http-threads must be positive");
  if (o.http.max_body_bytes < 1) {
    return absl::InvalidArgumentError("--max-body-bytes must be positive");
  }
  if (o.http.max_concurrent_requests < 1) {
    return absl::InvalidArgumentError("--max-concurrent-requests must be positive");
  }
  if (o.http.max_prompt_tokens < 0) {
    return absl::InvalidArgumentError("--max-prompt-tokens must be >= 0");
  }
  if (!(o.http.request_timeout_s >= 0)) {
    return absl::InvalidArgumentError("--request-timeout-s must be >= 0");
  }
  if (!(o.http.drain_timeout_s >= 0)) {
    return absl::InvalidArgumentError("--drain-timeout-s must be >= 0");
  }
  if (o.grpc.port < -1 || o.grpc.port > 65535) {
    return absl::InvalidArgumentError("--grpc-port must be in [-1, 65535]");
  }
  if (o.grpc.threads < 1) return absl::InvalidArgumentError("--grpc-threads must be positive");
  if (o.grpc.max_message_bytes < 1 || o.grpc.max_message_bytes > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError("--grpc-max-message-bytes must be in [1, 2^31)");
  }
  if (absl::Status s =
          pipelines::MapReduceApiOptions{
              .max_document_bytes = o.pipelines.mapreduce_max_document_bytes,
              .max_parallel = o.pipelines.mapreduce_max_parallel}
              .Validate();
      !s.ok()) {
    return s;
  }
  if (o.engine.load_delay_ms < 0) return absl::InvalidArgumentError("--load-delay-ms must be >= 0");
  if (o.engine.kv_cache_mb < 1) return absl::InvalidArgumentError("--kv-cache-mb must be positive");
  if (o.engine.max_model_len < 0) {
    return absl::InvalidArgumentError("--max-model-len must be >= 0");
  }
  return o.engine.duo.Validate();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "loom serve: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// SIGINT/SIGTERM, delivered by sigwait on one thread (blocked everywhere else).
class SignalWaiter {
 public:
  SignalWaiter() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);  // before any other thread starts
    thread_ = std::thread([this] {
      int sig = 0;
      sigwait(&set_, &sig);
      {
        std::lock_guard<std::mutex> lock(mu_);
        signal_ = sig;
      }
      cv_.notify_all();
      sigwait(&set_, &sig);  // a second signal: stop waiting for the drain
      std::fprintf(stderr, "loom serve: second signal, exiting now\n");
      std::_Exit(1);
    });
    thread_.detach();
  }
  int Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return signal_ != 0; });
    return signal_;
  }
  bool Received() {
    std::lock_guard<std::mutex> lock(mu_);
    return signal_ != 0;
  }

 private:
  sigset_t set_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  int signal_ = 0;
};

}  // namespace

absl::StatusOr<ServeOptions> ParseServeArgs(const std::vector<std::string>& args) {
  ServeOptions o;
  for (size_t i = 0; i + 1 < args.size(); ++i) {  // the config file first: flags override it
    if (args[i] == "--config") LOOM_RETURN_IF_ERROR(ApplyConfigFile(args[i + 1], &o));
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 2 || a[0] != '-') {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
    }
    if (i + 1 >= args.size()) return absl::InvalidArgumentError(a + " needs a value");
    const std::string& v = args[++i];
    if (a == "--config") continue;
    LOOM_RETURN_IF_ERROR(Apply(a.substr(a[1] == '-' ? 2 : 1), v, &o));
  }
  LOOM_RETURN_IF_ERROR(Validate(o));
  return o;
}

int RunServe(const std::vector<std::string>& args) {
  auto parsed = ParseServeArgs(args);
  if (!parsed.ok()) return Fail(parsed.status());
  const ServeOptions& o = *parsed;
  signal(SIGPIPE, SIG_IGN);
  // Leaked on purpose: its thread may still be in sigwait() when RunServe returns.
  SignalWaiter& signals = *new SignalWaiter;

  frontend::Frontend fe({.api_key = o.http.api_key,
                         .max_prompt_tokens = o.http.max_prompt_tokens,
                         .max_concurrent_requests = o.http.max_concurrent_requests,
                         .request_timeout_s = o.http.request_timeout_s});
  http::OpenAiServer api(&fe);
  pipelines::MapReduceApi mapreduce(&fe,
                                    {.max_document_bytes = o.pipelines.mapreduce_max_document_bytes,
                                     .max_parallel = o.pipelines.mapreduce_max_parallel});
  std::unique_ptr<http::HttpServer> server =
      http::HttpServer::Create({.threads = o.http.threads,
                                .max_body_bytes = static_cast<size_t>(o.http.max_body_bytes),
                                .error_formatter = http::OpenAiServer::FormatError});
  api.RegisterRoutes(*server);
  mapreduce.RegisterRoutes(*server);
  // Prometheus metrics on the HTTP port (routes must exist before Serve()); 503 until loaded.
  std::atomic<ServerMetrics*> metrics{nullptr};
  std::atomic<engine::Engine*> metrics_engine{nullptr};
  server->Route("GET", "/metrics", [&](const http::HttpRequest&, http::HttpResponse* res) {
    ServerMetrics* m = metrics.load();
    engine::Engine* e = metrics_engine.load();
    if (m == nullptr || e == nullptr) {
      res->status = 503;
      res->content_type = "text/plain";
      res->body = "loading\n";
      return;
    }
    res->content_type = "text/plain; version=0.0.4";
    res->body = m->Render(e->Stats());
  });
  std::unique_ptr<ServerMetrics> metrics_owner;
  auto port = server->Bind(o.http.host, o.http.port);
  if (!port.ok()) return Fail(port.status());

  std::mutex mu;
  std::condition_variable cv;
  bool serving_done = false;
  std::thread serve_thread([&] {
    server->Serve();
    std::lock_guard<std::mutex> lock(mu);
    serving_done = true;
    cv.notify_all();
  });
  std::fprintf(stderr, "loom serve: listening on http://%s:%d, loading %s\n", o.http.host.c_str(),
               *port, o.engine.model.c_str());
  std::unique_ptr<grpc_api::GrpcServer> grpc;
  if (o.grpc.port >= 0) {
    auto started = grpc_api::GrpcServer::Start({.host = o.http.host,
                                                .port = o.grpc.port,
                                                .max_threads = o.grpc.threads,
                                                .max_message_bytes = o.grpc.max_message_bytes,
                                                .on_rpc_done =
                                                    [&metrics](std::string_view method, int code) {
                                                      if (ServerMetrics* m = metrics.load())
                                                        m->OnGrpcCall(method, code);
                                                    }},
                                               &fe, &mapreduce);
    if (!started.ok()) {
      server->Stop();
      serve_thread.join();
      return Fail(started.status());
    }
    grpc = std::move(*started);
    std::fprintf(stderr, "loom serve: gRPC listening on %s:%d (health NOT_SERVING until loaded)\n",
                 o.http.host.c_str(), grpc->port());
  }
  if (o.engine.load_delay_ms > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(o.engine.load_delay_ms));
  }

  // Load while /health answers 503.
  std::unique_ptr<engine::Engine> eng;
  absl::Status load_status = [&]() -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> model,
                          engine::Model::Load(o.engine.model));
    engine::EngineConfig cfg;
    cfg.backend = o.engine.backend;
    cfg.n_threads = o.engine.threads;
    cfg.max_context =
        o.engine.max_model_len > 0 ? o.engine.max_model_len : model->config().context_length;
    cfg.max_num_seqs = o.engine.max_num_seqs;
    cfg.max_batched_tokens = o.engine.max_batched_tokens;
    cfg.max_waiting = o.engine.max_waiting;
    cfg.kv_cache_bytes = o.engine.kv_cache_mb << 20;
    cfg.max_tokens_cap = o.engine.max_tokens_cap;
    LOOM_ASSIGN_OR_RETURN(cfg.duo, LoadDuoLayout(o.engine.duo, model->config()));
    cfg.duo_prefix_snapshots = o.engine.duo.prefix_snapshots;
    if (cfg.duo != nullptr) {
      const std::string caching =
          !cfg.duo->HasStreaming() ? ""
          : cfg.duo_prefix_snapshots == 0
              ? "; prefix caching off"
              : absl::StrCat("; prefix caching with up to ", cfg.duo_prefix_snapshots,
                             " streaming-cache snapshots");
      std::fprintf(stderr, "loom serve: %s%s\n",
                   DescribeDuo(o.engine.duo, *cfg.duo, model->config()).c_str(), caching.c_str());
    }
    LOOM_ASSIGN_OR_RETURN(eng, engine::Engine::Create(cfg, std::move(model)));
    const std::string stem = std::filesystem::path(o.engine.model).stem().string();
    std::vector<std::string> names = {
        o.engine.served_model_name.empty() ? stem : o.engine.served_model_name, stem,
        eng->model().config().name};
    metrics_owner = std::make_unique<ServerMetrics>(names[0]);
    eng->SetOnFinished(
        [m = metrics_owner.get()](const engine::RequestTimings& t) { m->OnFinished(t); });
    metrics.store(metrics_owner.get());
    metrics_engine.store(eng.get());
    LOOM_RETURN_IF_ERROR(fe.SetEngine(eng.get(), names));
    if (grpc) grpc->SetServing(true);
    return absl::OkStatus();
  }();

  int exit_code = 0;
  if (!load_status.ok()) {
    exit_code = Fail(load_status);
  } else {
    std::fprintf(stderr, "loom serve: ready (%s, context %d)\n", eng->model().config().name.c_str(),
                 std::min(eng->config().max_context, eng->model().config().context_length));
    const int sig = signals.Wait();
    std::fprintf(stderr, "loom serve: %s, draining (up to %.0f s)\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", o.http.drain_timeout_s);
  }

  // Stop accepting, let in-flight requests finish (or cancel them at the deadline), then exit.
  fe.StartDraining();
  if (grpc) grpc->SetServing(false);
  server->Stop();
  if (eng) {
    const bool clean =
        eng->Drain(std::chrono::milliseconds(static_cast<int64_t>(o.http.drain_timeout_s * 1000)));
    if (!clean) std::fprintf(stderr, "loom serve: drain timeout; cancelled the rest\n");
  }
  // Every engine stream has ended: gRPC handlers write their last messages and return.
  if (grpc) grpc->Shutdown(std::chrono::seconds(5));
  {
    // Handlers finish writing their last events (slow clients are bounded by the write timeout).
    // Idle keep-alive connections would hold httplib's workers for up to the keep-alive timeout;
    // once no request is in flight they are not worth waiting for.
    std::unique_lock<std::mutex> lock(mu);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(35);
    while (!serving_done && std::chrono::steady_clock::now() < deadline && fe.in_flight() > 0) {
      cv.wait_for(lock, std::chrono::milliseconds(20));
    }
    if (!cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return serving_done; })) {
      std::fprintf(stderr, "loom serve: stopped (closing idle connections)\n");
      std::fflush(stderr);
      std::_Exit(exit_code);
    }
  }
  serve_thread.join();
  server.reset();
  metrics_engine.store(nullptr);
  eng.reset();
  std::fprintf(stderr, "loom serve: stopped\n");
  return exit_code;
}

}  // namespace loom::server
