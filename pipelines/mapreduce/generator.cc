#include "pipelines/mapreduce/generator.h"

#include "common/status_macros.h"

namespace loom::pipelines::mapreduce {

Generator::~Generator() = default;

absl::StatusOr<int> Generator::CountPromptTokens(const std::vector<chat::ChatMessage>& messages) {
  constexpr int kPerMessage = 16;  // role markers and a system preamble a template may add
  int total = kPerMessage;         // the generation prompt
  for (const chat::ChatMessage& m : messages) {
    LOOM_ASSIGN_OR_RETURN(int n, CountTokens(m.content));
    total += n + kPerMessage;
  }
  return total;
}

}  // namespace loom::pipelines::mapreduce
