#include "server/duo_options.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "engine/kv_cache/kv_block_manager.h"
#include "engine/model/duo_pattern.h"
#include "server/flags.h"

namespace loom::server {

absl::Status DuoOptions::Validate() const {
  if (!(sparsity >= 0 && sparsity <= 1)) {
    return absl::InvalidArgumentError("--duo-sparsity must be in [0, 1]");
  }
  if (prefix_snapshots < 0) {
    return absl::InvalidArgumentError("--duo-prefix-snapshots must be >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ApplyDuoSetting(std::string name, const std::string& value, DuoOptions* duo) {
  name = absl::StrReplaceAll(name, {{"_", "-"}});
  if (name == "duo-pattern") {
    duo->pattern = value;
    return true;
  }
  if (name == "duo-sparsity") {
    LOOM_RETURN_IF_ERROR(ParseNumber("--duo-sparsity", value, &duo->sparsity));
    return true;
  }
  if (name == "duo-prefix-snapshots") {
    LOOM_RETURN_IF_ERROR(ParseNumber("--duo-prefix-snapshots", value, &duo->prefix_snapshots));
    return true;
  }
  return false;
}

absl::StatusOr<std::shared_ptr<const engine::DuoLayout>> LoadDuoLayout(
    const DuoOptions& duo, const engine::ModelConfig& config) {
  if (duo.pattern.empty()) return std::shared_ptr<const engine::DuoLayout>();
  LOOM_RETURN_IF_ERROR(duo.Validate());
  LOOM_ASSIGN_OR_RETURN(engine::DuoPattern pattern, engine::DuoPattern::LoadJson(duo.pattern));
  return pattern.Layout(config, duo.sparsity);
}

std::string DescribeDuo(const DuoOptions& duo, const engine::DuoLayout& d,
                        const engine::ModelConfig& config) {
  return absl::StrFormat(
      "DuoAttention %s, sparsity %.2f: %d of %d KV heads streaming (sink %d, recent %d); per "
      "layer: %s; paged KV %d bytes/token (full %d), streaming KV %d bytes/sequence",
      duo.pattern, duo.sparsity, d.TotalStreaming(), d.n_layers() * d.n_kv_heads(), d.sink(),
      d.recent(), d.StreamingPerLayer(), d.RetrievalBytesPerToken(),
      kv::KvBytesPerToken(config.n_layers, config.kv_dim()), d.StreamingBytesPerSequence());
}

}  // namespace loom::server
