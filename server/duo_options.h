// DuoAttention settings shared by `loom serve`, `loom generate` and `loom chat`: the
// --duo-pattern / --duo-sparsity flags, their validation, loading the pattern into a DuoLayout for
// the loaded model, and the one line both commands log (docs/duo_attention.md).
//
//   DuoOptions duo;
//   LOOM_ASSIGN_OR_RETURN(bool known, ApplyDuoSetting("duo-sparsity", "0.5", &duo));
//   LOOM_RETURN_IF_ERROR(duo.Validate());
//   LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const engine::DuoLayout> layout,
//                         LoadDuoLayout(duo, model->config()));  // null: DuoAttention off
//   if (layout) std::puts(DescribeDuo(duo, *layout, model->config()).c_str());
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/duo_layout.h"
#include "engine/model/model_config.h"

namespace loom::server {

struct DuoOptions {
  // A pattern JSON (gates TSV + sink/recent, engine/model/duo_pattern.h); empty: DuoAttention off.
  std::string pattern;
  // The fraction of KV heads (lowest gates first) that become streaming heads.
  double sparsity = 0.5;
  // With streaming heads: streaming-cache copies kept for prefix caching (0: prefix caching off).
  int prefix_snapshots = 16;

  // InvalidArgument unless sparsity is in [0, 1] and prefix_snapshots >= 0.
  absl::Status Validate() const;
};

// Applies one setting named without its leading dashes ("duo-pattern", "duo-sparsity",
// "duo-prefix-snapshots"; '_' and '-' alike). False when `name` is not a DuoAttention setting;
// InvalidArgument for a bad number.
absl::StatusOr<bool> ApplyDuoSetting(std::string name, const std::string& value, DuoOptions* duo);

// The layout for `config`: null when no pattern is set; NotFound for a missing file,
// InvalidArgument for a bad pattern or one whose shape differs from the model's.
absl::StatusOr<std::shared_ptr<const engine::DuoLayout>> LoadDuoLayout(
    const DuoOptions& duo, const engine::ModelConfig& config);

// "DuoAttention PATH, sparsity 0.50: 45 of 90 KV heads streaming (sink 64, recent 256); per
// layer: 0 1 ...; paged KV N bytes/token (full M), streaming KV K bytes/sequence"
std::string DescribeDuo(const DuoOptions& duo, const engine::DuoLayout& layout,
                        const engine::ModelConfig& config);

}  // namespace loom::server
