// A small HTTP/1.1 server interface for Loom's front ends: exact-path routes, whole-body requests,
// and responses that are either a body or a stream written chunk by chunk (server-sent events).
// The implementation (http_server.cc) wraps cpp-httplib; nothing else in Loom includes httplib.h,
// so the library can be swapped behind this header.
//
//   auto server = loom::server::http::HttpServer::Create({.threads = 64});
//   server->Route("GET", "/health", [](const HttpRequest& req, HttpResponse* res) {
//     res->body = "{}";
//   });
//   server->Route("POST", "/echo", [](const HttpRequest& req, HttpResponse* res) {
//     res->content_type = "text/event-stream";
//     res->stream = [body = req.body](StreamWriter& w) { w.Write("data: " + body + "\n\n"); };
//   });
//   LOOM_ASSIGN_OR_RETURN(int port, server->Bind("127.0.0.1", 8080));
//   server->Serve();  // blocks until another thread calls server->Stop()
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::server::http {

// One part of a multipart/form-data body (an uploaded file or a form field).
struct FormPart {
  std::string name;
  std::string filename;  // empty for plain fields
  std::string content_type;
  std::string content;
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // without the query string
  std::string body;
  std::vector<FormPart> form;  // the parts of a multipart/form-data body, in order
  std::vector<std::pair<std::string, std::string>> headers;  // names as sent
  std::string remote_addr;
  int remote_port = -1;

  // The first value of header `name` (case-insensitive); empty when absent.
  std::string Header(std::string_view name) const;
  // The first form part called `name`; nullptr when absent.
  const FormPart* Part(std::string_view name) const {
    for (const FormPart& p : form) {
      if (p.name == name) return &p;
    }
    return nullptr;
  }

  // True once the client has closed its end of the connection (the request can be abandoned).
  // Cheap enough to poll every few milliseconds. Always false when the implementation cannot tell.
  std::function<bool()> client_disconnected;
  bool ClientDisconnected() const { return client_disconnected && client_disconnected(); }
};

// The write end of a streamed response body.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Sends `data` now (one HTTP chunk). False when the client is gone; stop writing then.
  virtual bool Write(std::string_view data) = 0;
  // True once the client has closed the connection, without writing anything.
  virtual bool ClientDisconnected() = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, the status and headers are sent once the handler returns, then `stream` runs on the
  // same thread and produces the body (chunked transfer encoding); `body` is ignored.
  std::function<void(StreamWriter&)> stream;
};

using Handler = std::function<void(const HttpRequest&, HttpResponse*)>;

// Fills an error response for `status` with `message` (the server's own 404, 405, 413, ...).
using ErrorFormatter = std::function<void(int status, std::string_view message, HttpResponse*)>;

struct HttpServerOptions {
  int threads = 64;                    // most connections served at once (more wait in a queue)
  size_t max_body_bytes = 1 << 20;     // larger request bodies get 413
  int read_timeout_s = 30;             // reading a request
  int write_timeout_s = 30;            // writing one chunk to a slow client
  int keep_alive_timeout_s = 5;        // idle keep-alive connections are closed after this
  int keep_alive_max_requests = 1000;  // requests per connection
  ErrorFormatter error_formatter;      // default: a plain-text body
};

class HttpServer {
 public:
  // The cpp-httplib implementation.
  static std::unique_ptr<HttpServer> Create(const HttpServerOptions& options);

  virtual ~HttpServer() = default;

  // Registers `handler` for `method` on exactly `path`. Unknown paths get 404, known paths with
  // another method 405 (with an Allow header). Register everything before Serve().
  virtual void Route(const std::string& method, const std::string& path, Handler handler) = 0;
  // Binds the listening socket; port 0 picks a free one. Returns the bound port.
  virtual absl::StatusOr<int> Bind(const std::string& host, int port) = 0;
  // Accepts connections until Stop(); returns after in-flight requests have completed.
  virtual void Serve() = 0;
  // Stops accepting (closes the listening socket); in-flight requests run to completion.
  // Thread-safe; may be called from any thread, also before Serve() runs.
  virtual void Stop() = 0;
};

}  // namespace loom::server::http
