#include "server/grpc/pipelines_service.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "server/grpc/grpc_common.h"

namespace loom::server::grpc_api {
namespace {

namespace mr = loom::pipelines::mapreduce;

void FillChunk(const mr::ChunkResult& c, loom::v1::ChunkInfo* out) {
  out->set_index(c.index);
  out->set_extracted_information(c.extracted);
  out->set_rationale(c.rationale);
  out->set_answer(c.answer);
  out->set_confidence(c.confidence);
  out->set_no_information(c.no_information);
  out->set_grounded(c.grounded);
}

}  // namespace

grpc::Status PipelinesService::MapReduce(grpc::ServerContext* ctx,
                                         const loom::v1::MapReduceRequest* req,
                                         grpc::ServerWriter<loom::v1::MapReduceEvent>* writer) {
  if (grpc::Status s = Admit(mapreduce_->frontend(), ctx); !s.ok()) return s;
  pipelines::MapReduceCall call;
  call.model = req->model();
  call.document = req->document();
  call.question = req->question();
  if (!req->task().empty()) call.task = req->task();
  if (req->has_context_window()) call.context_window = req->context_window();
  if (req->has_max_tokens()) call.max_tokens = req->max_tokens();
  if (req->has_max_collapse_rounds()) call.max_collapse_rounds = req->max_collapse_rounds();
  if (req->has_temperature()) call.temperature = req->temperature();
  if (!req->evidence().empty()) call.evidence = req->evidence();
  if (!req->values().empty()) call.values = req->values();

  std::atomic<bool> cancelled{false};
  std::atomic<bool> finished{false};
  // The pipeline blocks in its calls; a watcher turns a cancelled call (or a passed deadline)
  // into the pipeline's cancel flag.
  std::thread watcher([&] {
    while (!finished.load()) {
      if (ctx->IsCancelled()) {
        cancelled.store(true);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  loom::v1::MapReduceEvent ev;
  absl::StatusOr<mr::MapReduceResult> r = mapreduce_->Run(
      call,
      [&](const mr::ProgressEvent& e) {
        ev.Clear();
        ev.set_stage(e.stage);
        ev.set_done(e.done);
        ev.set_total(e.total);
        ev.set_round(e.round);
        if (e.result) FillChunk(*e.result, ev.mutable_chunk());
        if (!writer->Write(ev)) cancelled.store(true);
      },
      &cancelled);
  finished.store(true);
  watcher.join();
  if (!r.ok()) return ToGrpc(r.status());
  ev.Clear();
  ev.set_stage("done");
  ev.set_answer(r->answer);
  ev.set_rationale(r->rationale);
  ev.set_confidence(r->confidence);
  for (const mr::ChunkResult& c : r->chunks) FillChunk(c, ev.add_chunks());
  ev.set_num_chunks(r->num_chunks);
  ev.set_collapse_rounds(r->collapse_rounds);
  ev.set_prompt_tokens(r->prompt_tokens);
  ev.set_completion_tokens(r->completion_tokens);
  ev.set_cached_prompt_tokens(r->cached_prompt_tokens);
  ev.set_seconds(r->seconds);
  writer->Write(ev);
  return grpc::Status::OK;
}

}  // namespace loom::server::grpc_api
