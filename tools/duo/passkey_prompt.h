// The passkey prompt the DuoAttention tools share (tools/duo/proxy_gates.cc measures the gates on
// it; bench/duo_memory checks retrieval with it): filler sentences around one needle, ending with
// the question and the start of the answer.
//
//   std::string p = loom::duo::PasskeyPrompt("71432", 20, 20);  // "... The pass key is"
#pragma once

#include <string>

namespace loom::duo {

inline std::string PasskeyPrompt(const std::string& key, int filler_before, int filler_after) {
  const std::string filler =
      "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
      "again. ";
  std::string s =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
      "it. I will quiz you about the important information there.\n";
  for (int i = 0; i < filler_before; ++i) s += filler;
  s += "The pass key is " + key + ". Remember it. " + key + " is the pass key.\n";
  for (int i = 0; i < filler_after; ++i) s += filler;
  return s + "What is the pass key? The pass key is";
}

}  // namespace loom::duo
