#include "engine/model/duo_pattern.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace loom::engine {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("DuoAttention: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<DuoPattern> DuoPattern::ParseGatesTsv(std::string_view text) {
  DuoPattern p;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    int cols = 0;
    for (absl::string_view cell : absl::StrSplit(line, '\t')) {
      cell = absl::StripAsciiWhitespace(cell);
      double v = 0;
      if (!absl::SimpleAtod(cell, &v) || !(v >= 0.0 && v <= 1.0)) {
        return absl::InvalidArgumentError(absl::StrCat("DuoAttention gates, line ", line_no, ": '",
                                                       std::string(cell),
                                                       "' is not a number in [0, 1]"));
      }
      p.gates.push_back(static_cast<float>(v));
      ++cols;
    }
    if (p.n_layers > 0 && cols != p.n_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat("DuoAttention gates, line ", line_no, ": ",
                                                     cols, " columns where the first row has ",
                                                     p.n_kv_heads));
    }
    p.n_kv_heads = cols;
    ++p.n_layers;
  }
  if (p.n_layers == 0) return absl::InvalidArgumentError("DuoAttention gates: no rows");
  return p;
}

absl::StatusOr<DuoPattern> DuoPattern::LoadJson(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  if (!j.contains("gates") || !j["gates"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"gates\" (a TSV path) is missing"));
  }
  auto get_int = [&](const char* key, int def, int* out) -> absl::Status {
    *out = def;
    if (!j.contains(key)) return absl::OkStatus();
    if (!j[key].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", key, "\" must be an integer"));
    }
    const int64_t v = j[key].get<int64_t>();
    if (v < 0 || v > (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", key, "\" is out of range"));
    }
    *out = static_cast<int>(v);
    return absl::OkStatus();
  };
  int sink = 0, recent = 0;
  LOOM_RETURN_IF_ERROR(get_int("sink", 64, &sink));
  LOOM_RETURN_IF_ERROR(get_int("recent", 256, &recent));
  if (recent < 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"recent\" must be >= 1"));
  }
  std::filesystem::path gates = j["gates"].get<std::string>();
  if (gates.is_relative()) gates = std::filesystem::path(path).parent_path() / gates;
  LOOM_ASSIGN_OR_RETURN(std::string tsv, ReadFile(gates.string()));
  absl::StatusOr<DuoPattern> p = ParseGatesTsv(tsv);
  if (!p.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(gates.string(), ": ", std::string(p.status().message())));
  }
  p->sink = sink;
  p->recent = recent;
  return p;
}

absl::Status DuoPattern::CheckShape(const ModelConfig& config) const {
  if (n_layers != config.n_layers || n_kv_heads != config.n_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DuoAttention gates are ", n_layers, " layers x ", n_kv_heads, " KV heads; the model has ",
        config.n_layers, " layers x ", config.n_kv_heads, " KV heads"));
  }
  return absl::OkStatus();
}

std::vector<bool> DuoPattern::StreamingHeads(double sparsity) const {
  const size_t n = gates.size();
  std::vector<bool> streaming(n, false);
  const size_t k = std::min(n, static_cast<size_t>(std::floor(sparsity * static_cast<double>(n))));
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Lowest gate first; equal gates in (layer, head) order.
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return gates[a] < gates[b]; });
  for (size_t i = 0; i < k; ++i) streaming[order[i]] = true;
  return streaming;
}

absl::StatusOr<std::shared_ptr<const DuoLayout>> DuoPattern::Layout(const ModelConfig& config,
                                                                    double sparsity) const {
  if (!(sparsity >= 0.0 && sparsity <= 1.0)) {
    return absl::InvalidArgumentError("DuoAttention: sparsity must be in [0, 1]");
  }
  LOOM_RETURN_IF_ERROR(CheckShape(config));
  return DuoLayout::Create(config, StreamingHeads(sparsity), sink, recent);
}

}  // namespace loom::engine
