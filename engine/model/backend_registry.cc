// The build-time list of backends. A backend built into this binary adds one line here.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/backend.h"
#include "engine/model/cpu_backend.h"

namespace loom::engine {
namespace {

struct Entry {
  const char* name;
  absl::StatusOr<std::unique_ptr<Backend>> (*create)(const Model&, const BackendOptions&);
};

constexpr Entry kBackends[] = {
    {"cpu", &CreateCpuBackend},
};

}  // namespace

std::vector<std::string> AvailableBackends() {
  std::vector<std::string> names;
  for (const Entry& e : kBackends) names.emplace_back(e.name);
  return names;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name, const Model& model,
                                                       const BackendOptions& options) {
  for (const Entry& e : kBackends) {
    if (name == e.name) return e.create(model, options);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", std::string(name),
                   "'; this build has: ", absl::StrJoin(AvailableBackends(), ", ")));
}

}  // namespace loom::engine
