// The `loom mapreduce` subcommand: LLM×MapReduce (pipelines/mapreduce) over a document file, on
// a local engine or on any OpenAI-compatible server (--endpoint), with a progress bar on stderr
// and the answer on stdout.
//
//   loom mapreduce --doc book.txt --question "Who finds the letter?" [--task qa]
//   loom mapreduce --doc haystack.txt --question "What is the pass key?" --task retrieval --json
//   loom mapreduce --doc book.txt --question "..." --endpoint http://127.0.0.1:8080/v1
#pragma once

#include <string>
#include <vector>

namespace loom::server {

// argv without the program name and subcommand. Returns the process exit code.
int RunMapReduceCli(const std::vector<std::string>& args);

extern const char kMapReduceUsage[];

}  // namespace loom::server
