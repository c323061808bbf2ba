#include "engine/model/duo_layout.h"

#include "absl/strings/str_cat.h"

namespace loom::engine {

absl::StatusOr<std::shared_ptr<const DuoLayout>> DuoLayout::Create(const ModelConfig& config,
                                                                   std::vector<bool> streaming,
                                                                   int sink, int recent) {
  const size_t n = static_cast<size_t>(config.n_layers) * config.n_kv_heads;
  if (streaming.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("DuoAttention: ", streaming.size(),
                                                   " head flags for a model with ", config.n_layers,
                                                   " layers x ", config.n_kv_heads, " KV heads"));
  }
  if (sink < 0) return absl::InvalidArgumentError("DuoAttention: sink must be >= 0");
  if (recent < 1) return absl::InvalidArgumentError("DuoAttention: recent must be >= 1");
  std::shared_ptr<DuoLayout> d(new DuoLayout());
  d->n_layers_ = config.n_layers;
  d->n_kv_heads_ = config.n_kv_heads;
  d->head_dim_ = config.head_dim;
  d->sink_ = sink;
  d->recent_ = recent;
  d->streaming_ = std::move(streaming);
  d->slot_.resize(n);
  d->n_retrieval_.assign(config.n_layers, 0);
  d->ret_offset_.assign(config.n_layers + 1, 0);
  d->stream_offset_.assign(config.n_layers + 1, 0);
  for (int l = 0; l < config.n_layers; ++l) {
    int r = 0, s = 0;
    for (int h = 0; h < config.n_kv_heads; ++h) {
      const size_t i = static_cast<size_t>(l) * config.n_kv_heads + h;
      d->slot_[i] = d->streaming_[i] ? s++ : r++;
    }
    d->n_retrieval_[l] = r;
    d->total_streaming_ += s;
    d->ret_offset_[l + 1] = d->ret_offset_[l] + static_cast<size_t>(r) * config.head_dim;
    d->stream_offset_[l + 1] = d->stream_offset_[l] + static_cast<size_t>(s) * config.head_dim;
  }
  return std::shared_ptr<const DuoLayout>(std::move(d));
}

std::string DuoLayout::StreamingPerLayer() const {
  std::string out;
  for (int l = 0; l < n_layers_; ++l) absl::StrAppend(&out, l == 0 ? "" : " ", NumStreaming(l));
  return out;
}

}  // namespace loom::engine
