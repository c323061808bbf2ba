// The `loom generate` and `loom chat` subcommands: a model in the terminal, streaming text and
// reporting prefill and decode speed; DuoAttention with the same flags as `loom serve`
// (server/duo_options.h).
//
//   loom generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "Hello" --chat
//   loom chat --model models/SmolLM2-135M-Instruct.Q4_1.gguf
//   loom generate --prompt "Hello" --duo-pattern config/duo_attention/X.json --duo-sparsity 0.5
#pragma once

#include <string>
#include <vector>

namespace loom::server {

// argv without the program name and subcommand. Returns the process exit code.
int RunGenerate(const std::vector<std::string>& args);
int RunChat(const std::vector<std::string>& args);

}  // namespace loom::server
