// OpenAiGenerator against a small in-process OpenAI-compatible server (cpp-httplib): model and
// context discovery, the request it sends (grammar field, seed, auth), the answer it reads, HTTP
// errors as statuses with the server's message, an unreachable server, and cancelling a slow call.
#include "pipelines/mapreduce/openai_generator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace loom::pipelines::mapreduce {
namespace {

using json = nlohmann::json;

class FakeOpenAiServer {
 public:
  explicit FakeOpenAiServer(bool report_context = true) {
    svr_.Get(
        "/v1/models", [this, report_context](const httplib::Request& req, httplib::Response& res) {
          if (!Authorized(req, res)) return;
          json model = {{"id", "fake-model"}, {"object", "model"}};
          if (report_context) model["max_model_len"] = 2048;
          res.set_content(json({{"object", "list"}, {"data", {model}}}).dump(), "application/json");
        });
    svr_.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      if (!Authorized(req, res)) return;
      json body = json::parse(req.body);
      Record(body);
      int count = 0;
      if (body.contains("prompt")) {
        count = static_cast<int>(body["prompt"].get<std::string>().size());
      } else {
        for (const json& m : body["messages"]) count += m["content"].get<std::string>().size();
        count += 10;
      }
      res.set_content(json({{"count", count}, {"max_model_len", 1024}}).dump(), "application/json");
    });
    svr_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      if (!Authorized(req, res)) return;
      json body = json::parse(req.body);
      Record(body);
      const std::string content = body["messages"][0]["content"];
      if (content == "bad") {
        res.status = 400;
        res.set_content(R"({"error":{"message":"max_tokens is too large","type":"x"}})",
                        "application/json");
        return;
      }
      if (content == "busy") {
        res.status = 429;
        res.set_content(R"({"object":"error","message":"queue full"})", "application/json");
        return;
      }
      if (content == "boom") {
        res.status = 500;
        res.set_content("internal trouble", "text/plain");
        return;
      }
      if (content == "slow") {
        for (int i = 0; i < 300 && !release_.load(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
      json answer = {{"choices",
                      {{{"index", 0},
                        {"message", {{"role", "assistant"}, {"content", "echo: " + content}}},
                        {"finish_reason", "length"}}}},
                     {"usage",
                      {{"prompt_tokens", 7},
                       {"completion_tokens", 3},
                       {"prompt_tokens_details", {{"cached_tokens", 5}}}}}};
      res.set_content(answer.dump(), "application/json");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    while (!svr_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeOpenAiServer() {
    release_.store(true);
    svr_.stop();
    thread_.join();
  }

  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/v1"); }
  json last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }
  void RequireKey(std::string key) { key_ = std::move(key); }

 private:
  bool Authorized(const httplib::Request& req, httplib::Response& res) {
    if (key_.empty() || req.get_header_value("Authorization") == "Bearer " + key_) return true;
    res.status = 401;
    res.set_content(R"({"error":{"message":"incorrect API key provided"}})", "application/json");
    return false;
  }
  void Record(const json& body) {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = body;
  }

  httplib::Server svr_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> release_{false};
  std::string key_;
  std::mutex mu_;
  json last_;
};

std::unique_ptr<OpenAiGenerator> Make(const std::string& url, std::string key = "") {
  OpenAiGeneratorOptions o;
  o.base_url = url;
  o.api_key = std::move(key);
  o.timeout_s = 10;
  auto g = OpenAiGenerator::Create(o);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : nullptr;
}

TEST(OpenAiGeneratorTest, DiscoversModelAndContext) {
  FakeOpenAiServer server;
  auto gen = Make(server.url());
  ASSERT_NE(gen, nullptr);
  EXPECT_EQ(gen->name(), "fake-model");
  EXPECT_EQ(gen->context_length(), 2048);

  auto slash = Make(server.url() + "/");  // a trailing slash is fine
  ASSERT_NE(slash, nullptr);
  EXPECT_EQ(slash->context_length(), 2048);

  FakeOpenAiServer no_len(/*report_context=*/false);
  auto from_tokenize = Make(no_len.url());
  ASSERT_NE(from_tokenize, nullptr);
  EXPECT_EQ(from_tokenize->context_length(), 1024);  // /tokenize's max_model_len

  OpenAiGeneratorOptions o;
  o.base_url = server.url();
  o.context_length = 512;
  auto fixed = OpenAiGenerator::Create(o);
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ((*fixed)->context_length(), 512);
}

TEST(OpenAiGeneratorTest, GeneratesAndCounts) {
  FakeOpenAiServer server;
  auto gen = Make(server.url());
  ASSERT_NE(gen, nullptr);
  GenerateCall call;
  call.messages = {{"user", "hello"}};
  call.max_tokens = 42;
  call.seed = 9;
  call.grammar = R"(root ::= "x")";
  auto r = gen->Generate(call);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "echo: hello");
  EXPECT_EQ(r->finish_reason, "length");
  EXPECT_EQ(r->prompt_tokens, 7);
  EXPECT_EQ(r->cached_prompt_tokens, 5);
  EXPECT_EQ(r->completion_tokens, 3);
  const json sent = server.last();
  EXPECT_EQ(sent["model"], "fake-model");
  EXPECT_EQ(sent["max_tokens"], 42);
  EXPECT_EQ(sent["seed"], 9);
  EXPECT_EQ(sent["temperature"], 0);
  EXPECT_EQ(sent["guided_grammar"], R"(root ::= "x")");
  EXPECT_FALSE(sent.contains("grammar"));  // Loom rejects both at once

  auto n = gen->CountTokens("abcdef");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 6);
  EXPECT_EQ(server.last()["add_special_tokens"], false);
  auto p = gen->CountPromptTokens({{"user", "abc"}});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, 13);
  EXPECT_EQ(server.last()["add_generation_prompt"], true);
}

TEST(OpenAiGeneratorTest, HttpErrorsCarryTheServerMessage) {
  FakeOpenAiServer server;
  auto gen = Make(server.url());
  ASSERT_NE(gen, nullptr);
  auto call = [&](std::string text) {
    GenerateCall c;
    c.messages = {{"user", std::move(text)}};
    return gen->Generate(c).status();
  };
  absl::Status bad = call("bad");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("max_tokens is too large"), std::string::npos) << bad;
  absl::Status busy = call("busy");
  EXPECT_EQ(busy.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(busy.message().find("queue full"), std::string::npos) << busy;
  absl::Status boom = call("boom");
  EXPECT_EQ(boom.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(boom.message().find("internal trouble"), std::string::npos) << boom;
}

TEST(OpenAiGeneratorTest, ApiKey) {
  FakeOpenAiServer server;
  server.RequireKey("sesame");
  OpenAiGeneratorOptions o;
  o.base_url = server.url();
  auto missing = OpenAiGenerator::Create(o);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(missing.status().message().find("incorrect API key"), std::string::npos);
  EXPECT_NE(Make(server.url(), "sesame"), nullptr);
}

TEST(OpenAiGeneratorTest, BadUrlsAndUnreachableServers) {
  OpenAiGeneratorOptions o;
  for (const char* url : {"", "localhost:8000/v1", "ftp://host/v1", "http://"}) {
    o.base_url = url;
    EXPECT_EQ(OpenAiGenerator::Create(o).status().code(), absl::StatusCode::kInvalidArgument)
        << url;
  }
  // A port that was free a moment ago: bound (not listening), then closed.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  o.base_url = absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/v1");
  o.connect_timeout_s = 2;
  o.timeout_s = 5;
  auto r = OpenAiGenerator::Create(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

TEST(OpenAiGeneratorTest, CancelClosesTheConnection) {
  FakeOpenAiServer server;
  auto gen = Make(server.url());
  ASSERT_NE(gen, nullptr);
  GenerateCall call;
  call.messages = {{"user", "slow"}};
  const auto start = std::chrono::steady_clock::now();
  call.is_cancelled = [&] {
    return std::chrono::steady_clock::now() - start > std::chrono::milliseconds(100);
  };
  auto r = gen->Generate(call);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_LT(seconds, 1.5);
}

}  // namespace
}  // namespace loom::pipelines::mapreduce
