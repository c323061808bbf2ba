// The CPU backend: the Llama forward pass on loom::kernels, threaded with util::ThreadPool.
// Created through CreateBackend("cpu", ...); see backend.h.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/model/backend.h"

namespace loom::engine {

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const Model& model,
                                                          const BackendOptions& options);

}  // namespace loom::engine
