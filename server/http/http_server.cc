// HttpServer on cpp-httplib (Debian's libcpp-httplib 0.11.4, a shared library).
//
// httplib 0.11.4 has no Request::is_connection_closed, so a handler cannot ask whether its client
// is still there. We find the connection's socket once, on the first ClientDisconnected() call, by
// matching the request's (local, remote) address pair against the process's open sockets in
// /proc/self/fd, then poll it for POLLRDHUP (the peer sent FIN or reset). Linux only; elsewhere
// ClientDisconnected() stays false and only failed writes reveal a disconnect.
#include "server/http/http_server.h"

#include <dirent.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loom::server::http {

std::string HttpRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (absl::EqualsIgnoreCase(k, std::string(name))) return v;
  }
  return "";
}

namespace {

// ---- Finding a request's socket -----------------------------------------------------------------

bool AddressOf(int fd, bool peer, std::string* ip, int* port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return false;
  if (addr.ss_family == AF_INET) {
    *port = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    *port = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  } else {
    return false;
  }
  char host[NI_MAXHOST] = {};
  // The same call httplib uses to fill Request::remote_addr, so the strings compare equal.
  if (getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), nullptr, 0,
                  NI_NUMERICHOST) != 0) {
    return false;
  }
  *ip = host;
  return true;
}

// The fd of the connected socket with these endpoints, or -1.
int FindConnectionSocket(const std::string& local_addr, int local_port,
                         const std::string& remote_addr, int remote_port) {
  if (local_port <= 0 || remote_port <= 0) return -1;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    std::string ip;
    int port = -1;
    if (!AddressOf(static_cast<int>(fd), /*peer=*/true, &ip, &port)) continue;
    if (port != remote_port || ip != remote_addr) continue;
    if (!AddressOf(static_cast<int>(fd), /*peer=*/false, &ip, &port)) continue;
    if (port != local_port || ip != local_addr) continue;
    found = static_cast<int>(fd);
    break;
  }
  closedir(dir);
  return found;
}

// Lazily located socket of one request; valid while the request's handler (or stream) runs,
// since httplib closes the socket only after that.
class DisconnectProbe {
 public:
  explicit DisconnectProbe(const httplib::Request& req)
      : local_addr_(req.local_addr),
        local_port_(req.local_port),
        remote_addr_(req.remote_addr),
        remote_port_(req.remote_port) {}

  bool Disconnected() {
    std::lock_guard<std::mutex> lock(mu_);
    if (fd_ == kUnknown)
      fd_ = FindConnectionSocket(local_addr_, local_port_, remote_addr_, remote_port_);
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

 private:
  static constexpr int kUnknown = -2;
  std::mutex mu_;
  int fd_ = kUnknown;
  const std::string local_addr_;
  const int local_port_;
  const std::string remote_addr_;
  const int remote_port_;
};

class SinkWriter : public StreamWriter {
 public:
  SinkWriter(httplib::DataSink& sink, DisconnectProbe& probe) : sink_(sink), probe_(probe) {}
  bool Write(std::string_view data) override {
    if (failed_) return false;
    if (data.empty()) return true;  // an empty chunk would end the chunked body
    if (!sink_.write(data.data(), data.size())) failed_ = true;
    return !failed_;
  }
  bool ClientDisconnected() override {
    if (!failed_ && probe_.Disconnected()) failed_ = true;
    return failed_;
  }
  bool failed() const { return failed_; }

 private:
  httplib::DataSink& sink_;
  DisconnectProbe& probe_;
  bool failed_ = false;
};

// A task queue that starts worker threads as connections need them, up to `max_threads` (beyond
// that, connections wait in the queue). Workers idle for kIdleExit end, down to kMinThreads, so
// memory returns to its baseline after a burst of connections.
class ElasticPool : public httplib::TaskQueue {
 public:
  static constexpr int kMinThreads = 4;
  static constexpr std::chrono::seconds kIdleExit{10};

  explicit ElasticPool(int max_threads) : max_threads_(std::max(1, max_threads)) {}
  ~ElasticPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(fn));
      if (idle_ < static_cast<int>(jobs_.size()) && live_ < max_threads_) {
        ++live_;
        std::thread([this] { Work(); }).detach();
      }
    }
    cv_.notify_one();
  }

  void shutdown() override {
    std::unique_lock<std::mutex> lock(mu_);
    shutdown_ = true;
    cv_.notify_all();
    exited_.wait(lock, [&] { return live_ == 0; });
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      ++idle_;
      const bool woken = cv_.wait_for(lock, kIdleExit, [&] { return shutdown_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) {
        if (shutdown_ || (!woken && live_ > kMinThreads)) break;
        continue;
      }
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      fn = nullptr;
      lock.lock();
    }
    // The last touch of the pool: shutdown() returns (and the pool may be deleted) only after
    // this thread releases mu_.
    --live_;
    exited_.notify_all();
  }

  const int max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable exited_;
  std::deque<std::function<void()>> jobs_;
  int live_ = 0;
  int idle_ = 0;
  bool shutdown_ = false;
};

const char* DefaultMessage(int status) {
  switch (status) {
    case 400:
      return "malformed HTTP request";
    case 404:
      return "not found";
    case 405:
      return "method not allowed";
    case 413:
      return "the request body is too large";
    case 414:
      return "the request URI is too long";
    default:
      return "request failed";
  }
}

void PlainError(int status, std::string_view message, HttpResponse* res) {
  res->status = status;
  res->content_type = "text/plain";
  res->body = absl::StrCat(std::string(message), "\n");
}

class HttplibServer : public HttpServer {
 public:
  explicit HttplibServer(const HttpServerOptions& options) : options_(options) {
    if (!options_.error_formatter) options_.error_formatter = PlainError;
    const int threads = options_.threads;
    svr_.new_task_queue = [threads] { return new ElasticPool(threads); };
    svr_.set_payload_max_length(options_.max_body_bytes);
    svr_.set_read_timeout(options_.read_timeout_s, 0);
    svr_.set_write_timeout(options_.write_timeout_s, 0);
    svr_.set_keep_alive_timeout(options_.keep_alive_timeout_s);
    svr_.set_keep_alive_max_count(options_.keep_alive_max_requests);
    svr_.set_tcp_nodelay(true);
    auto dispatch = [this](const httplib::Request& req, httplib::Response& res) {
      Dispatch(req, res);
    };
    for (const char* pattern : {".*"}) {
      svr_.Get(pattern, dispatch);
      svr_.Post(pattern, dispatch);
      svr_.Put(pattern, dispatch);
      svr_.Patch(pattern, dispatch);
      svr_.Delete(pattern, dispatch);
      svr_.Options(pattern, dispatch);
    }
    // Errors httplib produces itself (413 body too large, 400 unparsable request) get our body.
    httplib::Server::HandlerWithResponse on_error = [this](const httplib::Request&,
                                                           httplib::Response& res) {
      if (!res.body.empty() || res.content_provider_) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      HttpResponse r;
      options_.error_formatter(res.status, DefaultMessage(res.status), &r);
      res.set_content(r.body, r.content_type);
      return httplib::Server::HandlerResponse::Handled;
    };
    svr_.set_error_handler(std::move(on_error));
  }

  void Route(const std::string& method, const std::string& path, Handler handler) override {
    routes_[path][method] = std::move(handler);
  }

  absl::StatusOr<int> Bind(const std::string& host, int port) override {
    // Debian's httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when the
    // shared library was built): a burst of connections would overflow the accept queue and be
    // reset. Remember the listening socket and listen again with the system's maximum.
    int listen_fd = -1;
    svr_.set_socket_options([&listen_fd](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_fd = sock;
    });
    const int bound =
        port == 0 ? svr_.bind_to_any_port(host) : (svr_.bind_to_port(host, port) ? port : -1);
    svr_.set_socket_options(httplib::default_socket_options);  // the lambda's capture dies here
    if (bound <= 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port));
    }
    if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
    return bound;
  }

  void Serve() override {
    serving_.store(true);
    if (!stopped_.load()) svr_.listen_after_bind();
    serving_.store(false);
  }

  void Stop() override {
    stopped_.store(true);
    // httplib's stop() does nothing until listen has started; Serve() may be just starting.
    for (int i = 0; i < 2000 && serving_.load() && !svr_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    svr_.stop();
  }

 private:
  void Dispatch(const httplib::Request& req, httplib::Response& res) {
    HttpRequest request;
    request.method = req.method == "HEAD" ? "GET" : req.method;
    request.path = req.path;
    request.body = req.body;
    request.remote_addr = req.remote_addr;
    request.remote_port = req.remote_port;
    request.headers.assign(req.headers.begin(), req.headers.end());
    for (const auto& [name, file] : req.files) {
      request.form.push_back({file.name, file.filename, file.content_type, file.content});
    }
    auto probe = std::make_shared<DisconnectProbe>(req);
    request.client_disconnected = [probe] { return probe->Disconnected(); };

    HttpResponse response;
    auto route = routes_.find(request.path);
    if (route == routes_.end()) {
      options_.error_formatter(404, absl::StrCat("no route for ", request.path), &response);
    } else if (auto h = route->second.find(request.method); h == route->second.end()) {
      std::vector<std::string> allowed;
      for (const auto& [m, unused] : route->second) allowed.push_back(m);
      options_.error_formatter(
          405, absl::StrCat(request.method, " is not allowed on ", request.path), &response);
      response.headers.emplace_back("Allow", absl::StrJoin(allowed, ", "));
    } else {
      h->second(request, &response);
    }

    res.status = response.status;
    for (const auto& [k, v] : response.headers) res.set_header(k, v);
    if (!response.stream) {
      res.set_content(response.body, response.content_type);
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        response.content_type,
        [stream = std::move(response.stream), probe](size_t, httplib::DataSink& sink) {
          SinkWriter writer(sink, *probe);
          stream(writer);
          if (writer.failed()) return false;  // httplib drops the connection
          sink.done();
          return true;
        });
  }

  HttpServerOptions options_;
  httplib::Server svr_;
  std::map<std::string, std::map<std::string, Handler>> routes_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> serving_{false};
};

}  // namespace

std::unique_ptr<HttpServer> HttpServer::Create(const HttpServerOptions& options) {
  return std::make_unique<HttplibServer>(options);
}

}  // namespace loom::server::http
