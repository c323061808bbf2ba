// The loom binary: one entry point, one subcommand per job.
#include <cstdio>
#include <string>
#include <vector>

#include "server/cli.h"
#include "server/mapreduce_cli.h"
#include "server/serve.h"

namespace {

constexpr char kUsageHead[] =
    "usage: loom <command> [flags]\n"
    "commands:\n"
    "  generate  --prompt TEXT [--chat] [--system TEXT] [--max-tokens N] [--temperature T]\n"
    "            [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
    "            [--presence-penalty P] [--frequency-penalty F] [--seed S] [--stop S]\n"
    "            [--threads N] [--ctx N] [--model PATH] [--backend cpu] [--ignore-eos]\n"
    "            [--duo-pattern FILE.json (DuoAttention; default off)] [--duo-sparsity S (0.5)]\n"
    "  chat      interactive chat with the model (same flags, no --prompt)\n";

std::string Usage() {
  return std::string(kUsageHead) + loom::server::kServeUsage + loom::server::kMapReduceUsage;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(Usage().c_str(), stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "generate") return loom::server::RunGenerate(args);
  if (cmd == "chat") return loom::server::RunChat(args);
  if (cmd == "serve") return loom::server::RunServe(args);
  if (cmd == "mapreduce") return loom::server::RunMapReduceCli(args);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(Usage().c_str(), stdout);
    return 0;
  }
  std::fprintf(stderr, "loom: unknown command '%s'\n%s", cmd.c_str(), Usage().c_str());
  return 2;
}
