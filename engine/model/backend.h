// The seam between the engine and the hardware: a Backend runs the model forward over a batch of
// sequences. Backends are listed at build time in backend_registry.cc (CPU always; CUDA when built
// with -DLOOM_CUDA=ON), as ggml's backend registry does.
//
//   LOOM_ASSIGN_OR_RETURN(auto backend, loom::engine::CreateBackend("cpu", *model, {.n_threads =
//   2})); std::vector<float> logits; LOOM_RETURN_IF_ERROR(backend->Forward({{&kv, tokens,
//   /*all_logits=*/false}}, &logits));
//   // logits holds vocab_size floats for the last token of the sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/kv_sequence.h"
#include "engine/model/kv_view.h"
#include "engine/model/model.h"

namespace loom::engine {

// One sequence's share of a forward pass: `tokens` go at positions kv->size() onwards. The cache is
// a KvSequence (contiguous) or a PagedKvView (blocks of a shared KvPool, see kv_pool.h).
struct SeqBatch {
  KvView* kv = nullptr;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every token (scoring), else only the last one
};

struct BackendOptions {
  int n_threads = 0;  // 0: one per core
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // Appends each entry's tokens' K/V to its cache and writes logits, vocab_size floats per row:
  // for each entry in order, a row per token when all_logits, else a row for its last token.
  // A failed call leaves every cache as it was.
  virtual absl::Status Forward(std::span<const SeqBatch> batch, std::vector<float>* logits) = 0;
};

// Names of the backends this build has, e.g. {"cpu"} or {"cpu", "cuda"}.
std::vector<std::string> AvailableBackends();
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name, const Model& model,
                                                       const BackendOptions& options);

}  // namespace loom::engine
