#include "server/grpc/grpc_server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/grpc/generation_service.h"
#include "server/grpc/kserve_service.h"
#include "server/grpc/pipelines_service.h"

namespace loom::server::grpc_api {
namespace {

constexpr const char* kServiceNames[] = {"", "loom.v1.Generation", "loom.v1.Pipelines",
                                         "inference.GRPCInferenceService"};

// Reports every finished RPC (method, status code) to the options' callback.
class DoneInterceptor final : public grpc::experimental::Interceptor {
 public:
  DoneInterceptor(grpc::experimental::ServerRpcInfo* info,
                  const std::function<void(std::string_view, int)>* fn)
      : method_(info->method() ? info->method() : ""), fn_(fn) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      (*fn_)(method_, static_cast<int>(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  const std::function<void(std::string_view, int)>* fn_;
};

class DoneInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit DoneInterceptorFactory(const std::function<void(std::string_view, int)>* fn) : fn_(fn) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new DoneInterceptor(info, fn_);
  }

 private:
  const std::function<void(std::string_view, int)>* fn_;
};

}  // namespace

struct GrpcServer::Services {
  Services(frontend::Frontend* fe, pipelines::MapReduceApi* mr,
           std::function<void(std::string_view, int)> done)
      : generation(fe), kserve(fe), pipelines(mr), on_rpc_done(std::move(done)) {}
  GenerationService generation;
  KServeService kserve;
  PipelinesService pipelines;
  std::function<void(std::string_view, int)> on_rpc_done;
};

absl::Status GrpcServerOptions::Validate() const {
  if (port < 0 || port > 65535)
    return absl::InvalidArgumentError("--grpc-port must be in [0, 65535]");
  if (max_threads < 1) return absl::InvalidArgumentError("--grpc-threads must be positive");
  if (max_message_bytes < 1 || max_message_bytes > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError("--grpc-max-message-bytes must be in [1, 2^31)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options,
                                                              frontend::Frontend* fe,
                                                              pipelines::MapReduceApi* mr) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<GrpcServer> server(new GrpcServer);
  server->services_ = std::make_unique<Services>(fe, mr, options.on_rpc_done);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(options.host.find(':') != std::string::npos
                                               ? absl::StrCat("[", options.host, "]")
                                               : options.host,
                                           ":", options.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  grpc::ResourceQuota quota("loom-grpc");
  quota.SetMaxThreads(options.max_threads);
  builder.SetResourceQuota(quota);
  builder.RegisterService(&server->services_->generation);
  builder.RegisterService(&server->services_->kserve);
  if (mr != nullptr) builder.RegisterService(&server->services_->pipelines);
  if (server->services_->on_rpc_done) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
    f.push_back(std::make_unique<DoneInterceptorFactory>(&server->services_->on_rpc_done));
    builder.experimental().SetInterceptorCreators(std::move(f));
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address));
  }
  server->SetServing(false);
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  for (const char* name : kServiceNames) health->SetServingStatus(name, serving);
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
}

}  // namespace loom::server::grpc_api
