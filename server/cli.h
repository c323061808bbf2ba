// The `loom generate` and `loom chat` subcommands: a model in the terminal, streaming text and
// reporting prefill and decode speed.
//
//   loom generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "Hello" --chat
//   loom chat --model models/SmolLM2-135M-Instruct.Q4_1.gguf
#pragma once

#include <string>
#include <vector>

namespace loom::server {

// argv without the program name and subcommand. Returns the process exit code.
int RunGenerate(const std::vector<std::string>& args);
int RunChat(const std::vector<std::string>& args);

}  // namespace loom::server
