// Writes the gguf_fuzz seed corpus: a few small valid GGUF files built with GgufWriter.
//   gguf_fuzz_seeds <output-dir>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/gguf/gguf_writer.h"

namespace {

using loom::gguf::GgufWriter;
using loom::gguf::MakeArray;
using loom::gguf::MakeInt;
using loom::gguf::MakeString;
using loom::gguf::ValueType;
using loom::kernels::DType;

std::string Bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 13 + 5);
  return s;
}

std::vector<std::pair<std::string, GgufWriter>> Seeds() {
  std::vector<std::pair<std::string, GgufWriter>> seeds;

  seeds.emplace_back("empty.gguf", GgufWriter());

  GgufWriter all;
  all.AddUint8("u8", 200);
  all.AddInt8("i8", -3);
  all.AddUint16("u16", 60000);
  all.AddInt16("i16", -300);
  all.AddUint32("u32", 70000);
  all.AddInt32("i32", -70000);
  all.AddUint64("u64", uint64_t{1} << 40);
  all.AddInt64("i64", -(int64_t{1} << 40));
  all.AddFloat32("f32", 0.5f);
  all.AddFloat64("f64", 0.25);
  all.AddBool("b", true);
  all.AddString("s", "llama");
  all.AddArray("nested", ValueType::kArray,
               {MakeArray(ValueType::kInt16, {MakeInt(ValueType::kInt16, 7)}),
                MakeArray(ValueType::kString, {MakeString("x")})});
  all.AddTensorF32("f32", {4, 2}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8});
  all.AddTensor("q4_1", DType::kQ4_1, {32}, Bytes(20));
  all.AddTensor("q8_0", DType::kQ8_0, {32, 2}, Bytes(68));
  seeds.emplace_back("all_types.gguf", std::move(all));

  GgufWriter tok;
  tok.AddString("general.architecture", "llama");
  tok.AddUint32("llama.block_count", 1);
  tok.AddStringArray("tokenizer.ggml.tokens", {"<|im_start|>", "a", "b", "ab", "\xc4\xa0"});
  tok.AddStringArray("tokenizer.ggml.merges", {"a b"});
  tok.AddInt32Array("tokenizer.ggml.token_type", {3, 1, 1, 1, 1});
  tok.AddFloat32Array("tokenizer.ggml.scores", {0, 0, 0, 0, 0});
  tok.AddString("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}");
  seeds.emplace_back("tokenizer.gguf", std::move(tok));

  GgufWriter aligned;
  aligned.SetAlignment(8);
  aligned.AddTensor("f16", DType::kF16, {3}, Bytes(6));
  aligned.AddTensor("bf16", DType::kBF16, {1, 3}, Bytes(6));
  aligned.AddTensor("q4_k", DType::kQ4_K, {256}, Bytes(144));
  aligned.AddTensor("q6_k", DType::kQ6_K, {256}, Bytes(210));
  aligned.AddTensor("q4_0", DType::kQ4_0, {32, 1, 1, 1}, Bytes(18));
  seeds.emplace_back("aligned8.gguf", std::move(aligned));
  return seeds;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <output-dir>\n", argv[0]);
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(argv[1], ec);
  for (const auto& [name, writer] : Seeds()) {
    const std::string path = std::string(argv[1]) + "/" + name;
    if (absl::Status s = writer.WriteFile(path); !s.ok()) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(s.message()).c_str());
      return 1;
    }
  }
  return 0;
}
