// The KServe v2 / Open Inference Protocol (Triton's inference.GRPCInferenceService) over the
// shared Frontend, so unmodified Triton clients (tritonclient[grpc], perf_analyzer) can use Loom.
// The served model behaves like the TensorRT-LLM backend's text model: BYTES tensor `text_input`
// in, `text_output` out, with `max_tokens`, `temperature`, `top_p`, `top_k`, `seed`, `stream`,
// `stop_words` as optional input tensors or request parameters. ModelStreamInfer with `stream`
// true sends one response per generated token (text deltas); the last carries the parameter
// `triton_final_response: true`.
//
//   KServeService service(&frontend);
//   builder.RegisterService(&service);
#pragma once

#include "kserve/v2/grpc_service.grpc.pb.h"
#include "server/frontend/frontend.h"

namespace loom::server::grpc_api {

class KServeService final : public inference::GRPCInferenceService::Service {
 public:
  explicit KServeService(frontend::Frontend* fe) : fe_(fe) {}

  grpc::Status ServerLive(grpc::ServerContext* ctx, const inference::ServerLiveRequest* req,
                          inference::ServerLiveResponse* res) override;
  grpc::Status ServerReady(grpc::ServerContext* ctx, const inference::ServerReadyRequest* req,
                           inference::ServerReadyResponse* res) override;
  grpc::Status ModelReady(grpc::ServerContext* ctx, const inference::ModelReadyRequest* req,
                          inference::ModelReadyResponse* res) override;
  grpc::Status ServerMetadata(grpc::ServerContext* ctx, const inference::ServerMetadataRequest* req,
                              inference::ServerMetadataResponse* res) override;
  grpc::Status ModelMetadata(grpc::ServerContext* ctx, const inference::ModelMetadataRequest* req,
                             inference::ModelMetadataResponse* res) override;
  grpc::Status ModelInfer(grpc::ServerContext* ctx, const inference::ModelInferRequest* req,
                          inference::ModelInferResponse* res) override;
  grpc::Status ModelStreamInfer(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>*
          stream) override;

 private:
  frontend::Frontend* const fe_;
};

}  // namespace loom::server::grpc_api
