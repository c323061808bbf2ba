// A DuoAttention head pattern (arXiv 2410.10819): a gate in [0, 1] per layer and KV head (how
// much the head needs the full context; the reference's full_attention_heads.tsv: one row per
// layer, one tab-separated column per KV head) plus the streaming heads' sink and recent sizes,
// read from a small JSON file next to the gates:
//
//   config/duo_attention/SmolLM2-135M-Instruct.Q4_1.json:
//     {"gates": "SmolLM2-135M-Instruct.Q4_1.tsv", "sink": 64, "recent": 256}
//
// A sparsity in [0, 1] turns gates into heads: the floor(sparsity * total) heads with the lowest
// gates become streaming heads (ties broken by (layer, head) order, the earlier first), the rest
// keep the full cache. Sparsity 0: every head is a retrieval head, i.e. plain attention.
//
//   LOOM_ASSIGN_OR_RETURN(DuoPattern p, DuoPattern::LoadJson("config/duo_attention/x.json"));
//   LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const DuoLayout> duo,
//                         p.Layout(model.config(), /*sparsity=*/0.5));
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/duo_layout.h"
#include "engine/model/model_config.h"

namespace loom::engine {

struct DuoPattern {
  int n_layers = 0;
  int n_kv_heads = 0;
  std::vector<float> gates;  // n_layers * n_kv_heads, layer-major
  int sink = 64;
  int recent = 256;

  // Gates from TSV text (blank lines and a trailing newline ignored). InvalidArgument for a
  // value that is not a number in [0, 1], rows of different lengths, or no rows.
  static absl::StatusOr<DuoPattern> ParseGatesTsv(std::string_view text);
  // The JSON file ({"gates": path relative to the JSON's folder, "sink", "recent"}; other keys,
  // such as a note on how the gates were made, are ignored) and the gates it names.
  static absl::StatusOr<DuoPattern> LoadJson(const std::string& path);

  // InvalidArgument unless the gates are n_layers x n_kv_heads of `config`.
  absl::Status CheckShape(const ModelConfig& config) const;
  // One flag per head, layer-major: the floor(sparsity * total) lowest gates are streaming.
  // `sparsity` must be in [0, 1] (checked by Layout()).
  std::vector<bool> StreamingHeads(double sparsity) const;
  absl::StatusOr<std::shared_ptr<const DuoLayout>> Layout(const ModelConfig& config,
                                                          double sparsity) const;
};

}  // namespace loom::engine
