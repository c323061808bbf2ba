#include "server/grpc/kserve_service.h"

#include <cstring>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/grpc/grpc_common.h"

namespace loom::server::grpc_api {
namespace {

constexpr char kInput[] = "text_input";
constexpr char kOutput[] = "text_output";
constexpr char kVersion[] = "1";

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// One input tensor, decoded: BYTES elements as strings, anything numeric as doubles.
struct Tensor {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;
  std::vector<std::string> strings;
  std::vector<double> numbers;
};

int ElementSize(const std::string& dt) {
  if (dt == "BOOL" || dt == "INT8" || dt == "UINT8") return 1;
  if (dt == "INT16" || dt == "UINT16" || dt == "FP16" || dt == "BF16") return 2;
  if (dt == "INT32" || dt == "UINT32" || dt == "FP32") return 4;
  if (dt == "INT64" || dt == "UINT64" || dt == "FP64") return 8;
  return 0;
}

template <typename T>
double Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return static_cast<double>(v);
}

absl::Status DecodeRaw(const std::string& raw, Tensor* t) {
  if (t->datatype == "BYTES") {
    size_t at = 0;
    while (at < raw.size()) {
      if (raw.size() - at < 4) return Invalid(absl::StrCat(t->name, ": truncated BYTES element"));
      uint32_t len;
      std::memcpy(&len, raw.data() + at, 4);
      at += 4;
      if (raw.size() - at < len) return Invalid(absl::StrCat(t->name, ": truncated BYTES element"));
      t->strings.push_back(raw.substr(at, len));
      at += len;
    }
    return absl::OkStatus();
  }
  const int size = ElementSize(t->datatype);
  if (size == 0 || t->datatype == "FP16" || t->datatype == "BF16") {
    return Invalid(absl::StrCat(t->name, ": unsupported datatype ", t->datatype));
  }
  if (raw.size() % size != 0) return Invalid(absl::StrCat(t->name, ": raw size mismatch"));
  const std::string& d = t->datatype;
  for (size_t at = 0; at < raw.size(); at += size) {
    const char* p = raw.data() + at;
    double v = d == "BOOL" || d == "UINT8" ? Load<uint8_t>(p)
               : d == "INT8"               ? Load<int8_t>(p)
               : d == "INT16"              ? Load<int16_t>(p)
               : d == "UINT16"             ? Load<uint16_t>(p)
               : d == "INT32"              ? Load<int32_t>(p)
               : d == "UINT32"             ? Load<uint32_t>(p)
               : d == "FP32"               ? Load<float>(p)
               : d == "INT64"              ? Load<int64_t>(p)
               : d == "UINT64"             ? Load<uint64_t>(p)
                                           : Load<double>(p);
    t->numbers.push_back(v);
  }
  return absl::OkStatus();
}

void DecodeContents(const inference::InferTensorContents& c, Tensor* t) {
  for (const std::string& s : c.bytes_contents()) t->strings.push_back(s);
  for (bool v : c.bool_contents()) t->numbers.push_back(v ? 1 : 0);
  for (int32_t v : c.int_contents()) t->numbers.push_back(v);
  for (int64_t v : c.int64_contents()) t->numbers.push_back(static_cast<double>(v));
  for (uint32_t v : c.uint_contents()) t->numbers.push_back(v);
  for (uint64_t v : c.uint64_contents()) t->numbers.push_back(static_cast<double>(v));
  for (float v : c.fp32_contents()) t->numbers.push_back(v);
  for (double v : c.fp64_contents()) t->numbers.push_back(v);
}

absl::StatusOr<std::vector<Tensor>> DecodeInputs(const inference::ModelInferRequest& req) {
  const bool raw = req.raw_input_contents_size() > 0;
  if (raw && req.raw_input_contents_size() != req.inputs_size()) {
    return Invalid("raw_input_contents must hold one entry per input");
  }
  std::vector<Tensor> out;
  for (int i = 0; i < req.inputs_size(); ++i) {
    const auto& in = req.inputs(i);
    Tensor t;
    t.name = in.name();
    t.datatype = in.datatype();
    t.shape.assign(in.shape().begin(), in.shape().end());
    int64_t count = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return Invalid(absl::StrCat(t.name, ": negative dimension in shape"));
      count *= d;
    }
    if (raw) {
      absl::Status s = DecodeRaw(req.raw_input_contents(i), &t);
      if (!s.ok()) return s;
    } else {
      DecodeContents(in.contents(), &t);
    }
    const size_t got = t.datatype == "BYTES" ? t.strings.size() : t.numbers.size();
    if (static_cast<int64_t>(got) != count) {
      return Invalid(absl::StrCat(t.name, ": shape says ", count, " elements, data has ", got));
    }
    out.push_back(std::move(t));
  }
  return out;
}

// The generation request a ModelInferRequest describes.
struct TextRequest {
  std::vector<std::string> prompts;  // one per text_input element
  std::vector<int64_t> shape;        // text_input's shape, reused for text_output
  frontend::GenerationParams params;
  bool stream = false;
};

// Reads one setting from the request parameters, then from an input tensor of that name (the
// tensor wins). Numbers only; `found` tells whether either was there.
absl::Status Setting(const inference::ModelInferRequest& req, const std::vector<Tensor>& inputs,
                     const std::string& name, double* value, bool* found) {
  *found = false;
  if (auto it = req.parameters().find(name); it != req.parameters().end()) {
    const inference::InferParameter& p = it->second;
    switch (p.parameter_choice_case()) {
      case inference::InferParameter::kBoolParam:
        *value = p.bool_param();
        break;
      case inference::InferParameter::kInt64Param:
        *value = static_cast<double>(p.int64_param());
        break;
      case inference::InferParameter::kUint64Param:
        *value = static_cast<double>(p.uint64_param());
        break;
      case inference::InferParameter::kDoubleParam:
        *value = p.double_param();
        break;
      default:
        return Invalid(absl::StrCat("parameter '", name, "' must be a number or a bool"));
    }
    *found = true;
  }
  for (const Tensor& t : inputs) {
    if (t.name != name) continue;
    if (t.numbers.size() != 1) {
      return Invalid(absl::StrCat("input '", name, "' must hold one number"));
    }
    *value = t.numbers[0];
    *found = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<TextRequest> ParseRequest(const inference::ModelInferRequest& req) {
  absl::StatusOr<std::vector<Tensor>> inputs = DecodeInputs(req);
  if (!inputs.ok()) return inputs.status();
  TextRequest r;
  const Tensor* text = nullptr;
  for (const Tensor& t : *inputs) {
    if (t.name == kInput) text = &t;
  }
  if (text == nullptr) return Invalid("the request needs the BYTES input 'text_input'");
  if (text->datatype != "BYTES") return Invalid("'text_input' must be BYTES");
  if (text->strings.empty()) return Invalid("'text_input' is empty");
  if (text->strings.size() > static_cast<size_t>(frontend::kMaxChoices)) {
    return Invalid(
        absl::StrCat("'text_input' may hold at most ", frontend::kMaxChoices, " prompts"));
  }
  r.prompts = text->strings;
  r.shape = text->shape;
  for (const auto& out : req.outputs()) {
    if (out.name() != kOutput) {
      return Invalid(
          absl::StrCat("unknown output '", out.name(), "'; this model has 'text_output'"));
    }
  }
  frontend::GenerationParams& p = r.params;
  p.sampling.temperature = 1.0f;
  double v = 0;
  bool found = false;
  auto get = [&](const std::string& name) -> absl::Status {
    return Setting(req, *inputs, name, &v, &found);
  };
  absl::Status s;
  if (s = get("max_tokens"); !s.ok()) return s;
  if (found) p.max_tokens = static_cast<int64_t>(v);
  if (s = get("temperature"); !s.ok()) return s;
  if (found) p.sampling.temperature = static_cast<float>(v);
  if (s = get("top_p"); !s.ok()) return s;
  if (found) p.sampling.top_p = static_cast<float>(v);
  if (s = get("top_k"); !s.ok()) return s;
  if (found) p.sampling.top_k = static_cast<int>(v);
  if (s = get("min_p"); !s.ok()) return s;
  if (found) p.sampling.min_p = static_cast<float>(v);
  if (s = get("repetition_penalty"); !s.ok()) return s;
  if (found) p.sampling.repetition_penalty = static_cast<float>(v);
  if (s = get("presence_penalty"); !s.ok()) return s;
  if (found) p.sampling.presence_penalty = static_cast<float>(v);
  if (s = get("frequency_penalty"); !s.ok()) return s;
  if (found) p.sampling.frequency_penalty = static_cast<float>(v);
  for (const char* name : {"seed", "random_seed"}) {
    if (s = get(name); !s.ok()) return s;
    if (found) p.sampling.seed = static_cast<uint64_t>(v);
  }
  if (s = get("stream"); !s.ok()) return s;
  if (found) r.stream = v != 0;
  if (absl::Status st = p.sampling.Validate(); !st.ok()) return st;
  if (p.max_tokens && *p.max_tokens < 1) return Invalid("max_tokens must be at least 1");
  if (auto it = req.parameters().find("stop"); it != req.parameters().end()) {
    if (!it->second.string_param().empty()) p.stop.push_back(it->second.string_param());
  }
  for (const Tensor& t : *inputs) {
    if (t.name != "stop_words") continue;
    if (t.datatype != "BYTES") return Invalid("'stop_words' must be BYTES");
    for (const std::string& w : t.strings) {
      if (!w.empty()) p.stop.push_back(w);
    }
  }
  if (p.stop.size() > static_cast<size_t>(frontend::kMaxStopStrings)) {
    return Invalid(absl::StrCat("at most ", frontend::kMaxStopStrings, " stop words"));
  }
  return r;
}

std::string EncodeBytes(const std::vector<std::string>& items) {
  std::string raw;
  for (const std::string& s : items) {
    const uint32_t len = static_cast<uint32_t>(s.size());
    raw.append(reinterpret_cast<const char*>(&len), 4);
    raw.append(s);
  }
  return raw;
}

void FillResponse(const inference::ModelInferRequest& req, const std::string& model,
                  const std::vector<int64_t>& shape, const std::vector<std::string>& texts,
                  inference::ModelInferResponse* res) {
  res->set_model_name(model);
  res->set_model_version(kVersion);
  res->set_id(req.id());
  auto* out = res->add_outputs();
  out->set_name(kOutput);
  out->set_datatype("BYTES");
  if (shape.empty()) {
    out->add_shape(static_cast<int64_t>(texts.size()));
  } else {
    for (int64_t d : shape) out->add_shape(d);
  }
  res->add_raw_output_contents(EncodeBytes(texts));
}

// Runs one request: either one response with every prompt's whole text, or (stream) one per
// event of its single prompt. `emit` returns false when the client is gone.
absl::Status Run(frontend::Frontend& fe, grpc::ServerContext* ctx,
                 const inference::ModelInferRequest& req, bool allow_stream,
                 const std::function<bool(inference::ModelInferResponse&&)>& emit) {
  if (absl::Status s = fe.CheckModel(req.model_name()); !s.ok()) return s;
  if (!req.model_version().empty() && req.model_version() != kVersion) {
    return absl::NotFoundError(absl::StrCat("model version '", req.model_version(),
                                            "' does not exist; this model has version 1"));
  }
  absl::StatusOr<TextRequest> r = ParseRequest(req);
  if (!r.ok()) return r.status();
  const bool stream = allow_stream && r->stream;
  if (stream && r->prompts.size() != 1) {
    return Invalid("streaming takes one prompt per request");
  }
  const tokenizer::Tokenizer& tok = fe.engine()->tokenizer();
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& p : r->prompts) {
    prompts.push_back(tok.Encode(p, /*add_special=*/true, /*parse_special=*/true));
  }
  absl::StatusOr<frontend::Submission> sub =
      fe.Submit(prompts, r->params, "text_input", Deadline(ctx));
  if (!sub.ok()) return sub.status();
  const std::string& model = fe.model_names().front();
  std::vector<std::string> texts(prompts.size());
  PumpResult pr = Pump(*sub, ctx, [&](size_t i, const engine::StreamEvent& ev) {
    texts[i] += ev.text;
    if (!stream || (ev.text.empty() && !ev.finished)) return true;
    inference::ModelInferResponse res;
    FillResponse(req, model, r->shape, {ev.text}, &res);
    if (ev.finished) (*res.mutable_parameters())["triton_final_response"].set_bool_param(true);
    return emit(std::move(res));
  });
  if (!pr.status.ok()) return pr.status;
  if (stream) return absl::OkStatus();
  inference::ModelInferResponse res;
  FillResponse(req, model, r->shape, texts, &res);
  (*res.mutable_parameters())["triton_final_response"].set_bool_param(true);
  if (!emit(std::move(res))) return absl::CancelledError("the client went away");
  return absl::OkStatus();
}

void TensorMeta(
    const char* name, const char* dt,
    google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>* out) {
  auto* t = out->Add();
  t->set_name(name);
  t->set_datatype(dt);
  t->add_shape(-1);
}

}  // namespace

grpc::Status KServeService::ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                                       inference::ServerLiveResponse* res) {
  res->set_live(true);
  return grpc::Status::OK;
}

grpc::Status KServeService::ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                                        inference::ServerReadyResponse* res) {
  res->set_ready(fe_->ready());
  return grpc::Status::OK;
}

grpc::Status KServeService::ModelReady(grpc::ServerContext*,
                                       const inference::ModelReadyRequest* req,
                                       inference::ModelReadyResponse* res) {
  res->set_ready(fe_->ready() && fe_->CheckModel(req->name()).ok() &&
                 (req->version().empty() || req->version() == kVersion));
  return grpc::Status::OK;
}

grpc::Status KServeService::ServerMetadata(grpc::ServerContext* ctx,
                                           const inference::ServerMetadataRequest*,
                                           inference::ServerMetadataResponse* res) {
  if (absl::Status s = fe_->Authenticate(Authorization(ctx)); !s.ok()) return ToGrpc(s);
  res->set_name("loom");
  res->set_version("0.1.0");
  res->add_extensions("parameters");
  return grpc::Status::OK;
}

grpc::Status KServeService::ModelMetadata(grpc::ServerContext* ctx,
                                          const inference::ModelMetadataRequest* req,
                                          inference::ModelMetadataResponse* res) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  if (absl::Status s = fe_->CheckModel(req->name()); !s.ok()) return ToGrpc(s);
  res->set_name(fe_->model_names().front());
  res->add_versions(kVersion);
  res->set_platform("loom");
  TensorMeta(kInput, "BYTES", res->mutable_inputs());
  TensorMeta("max_tokens", "INT32", res->mutable_inputs());
  TensorMeta("temperature", "FP32", res->mutable_inputs());
  TensorMeta("top_p", "FP32", res->mutable_inputs());
  TensorMeta("top_k", "INT32", res->mutable_inputs());
  TensorMeta("seed", "UINT64", res->mutable_inputs());
  TensorMeta("stream", "BOOL", res->mutable_inputs());
  TensorMeta("stop_words", "BYTES", res->mutable_inputs());
  TensorMeta(kOutput, "BYTES", res->mutable_outputs());
  return grpc::Status::OK;
}

grpc::Status KServeService::ModelInfer(grpc::ServerContext* ctx,
                                       const inference::ModelInferRequest* req,
                                       inference::ModelInferResponse* res) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  absl::Status s =
      Run(*fe_, ctx, *req, /*allow_stream=*/false, [&](inference::ModelInferResponse&& r) {
        *res = std::move(r);
        return true;
      });
  return ToGrpc(s);
}

grpc::Status KServeService::ModelStreamInfer(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>*
        stream) {
  if (grpc::Status s = Admit(*fe_, ctx); !s.ok()) return s;
  std::mutex write_mu;
  auto write = [&](inference::ModelStreamInferResponse&& msg) {
    std::lock_guard<std::mutex> lock(write_mu);
    return stream->Write(msg);
  };
  // Requests on one stream run concurrently, like Triton's; responses interleave (each carries
  // its request's id).
  std::vector<std::thread> workers;
  inference::ModelInferRequest req;
  while (stream->Read(&req)) {
    workers.emplace_back([this, ctx, req, &write] {
      absl::Status s = fe_->CheckServing();
      if (s.ok()) {
        s = Run(*fe_, ctx, req, /*allow_stream=*/true, [&](inference::ModelInferResponse&& r) {
          inference::ModelStreamInferResponse msg;
          *msg.mutable_infer_response() = std::move(r);
          return write(std::move(msg));
        });
      }
      if (!s.ok() && s.code() != absl::StatusCode::kCancelled) {
        inference::ModelStreamInferResponse msg;
        msg.set_error_message(std::string(s.message()));
        msg.mutable_infer_response()->set_id(req.id());
        write(std::move(msg));
      }
    });
  }
  for (std::thread& t : workers) t.join();
  return grpc::Status::OK;
}

}  // namespace loom::server::grpc_api
