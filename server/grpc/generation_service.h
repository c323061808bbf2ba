// loom.v1.Generation (proto/loom/v1/generation.proto): chat and completion as server-streaming
// RPCs, Tokenize, Detokenize and ListModels, over the shared Frontend. Messages become
// frontend structs here; nothing below sees protobuf.
//
//   GenerationService service(&frontend);
//   builder.RegisterService(&service);
#pragma once

#include "absl/status/status.h"
#include "loom/v1/generation.grpc.pb.h"
#include "server/frontend/frontend.h"

namespace loom::server::grpc_api {

// The proto's parameters as the frontend's, checked as the HTTP API checks them (the error
// names the field, e.g. "params.sampling.temperature").
absl::Status ConvertParams(const loom::v1::GenerationParams& in, frontend::GenerationParams* out);

class GenerationService final : public loom::v1::Generation::Service {
 public:
  explicit GenerationService(frontend::Frontend* fe) : fe_(fe) {}

  grpc::Status Chat(grpc::ServerContext* ctx, const loom::v1::ChatRequest* req,
                    grpc::ServerWriter<loom::v1::GenerateResponse>* writer) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const loom::v1::CompleteRequest* req,
                        grpc::ServerWriter<loom::v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const loom::v1::TokenizeRequest* req,
                        loom::v1::TokenizeResponse* res) override;
  grpc::Status Detokenize(grpc::ServerContext* ctx, const loom::v1::DetokenizeRequest* req,
                          loom::v1::DetokenizeResponse* res) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const loom::v1::ListModelsRequest* req,
                          loom::v1::ListModelsResponse* res) override;

 private:
  grpc::Status Generate(grpc::ServerContext* ctx, const frontend::GenerationParams& params,
                        const std::vector<std::vector<int32_t>>& prompts, const char* prompt_param,
                        grpc::ServerWriter<loom::v1::GenerateResponse>* writer);

  frontend::Frontend* const fe_;
};

}  // namespace loom::server::grpc_api
