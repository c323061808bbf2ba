// loom.v1.Pipelines (proto/loom/v1/pipelines.proto): the paper pipelines over gRPC, streaming
// progress, over the same pipeline API as the HTTP routes (server/pipelines).
//
//   PipelinesService service(&mapreduce_api);
//   builder.RegisterService(&service);
#pragma once

#include "loom/v1/pipelines.grpc.pb.h"
#include "server/pipelines/mapreduce_api.h"

namespace loom::server::grpc_api {

class PipelinesService final : public loom::v1::Pipelines::Service {
 public:
  explicit PipelinesService(pipelines::MapReduceApi* mapreduce) : mapreduce_(mapreduce) {}

  grpc::Status MapReduce(grpc::ServerContext* ctx, const loom::v1::MapReduceRequest* req,
                         grpc::ServerWriter<loom::v1::MapReduceEvent>* writer) override;

 private:
  pipelines::MapReduceApi* const mapreduce_;
};

}  // namespace loom::server::grpc_api
