// Test support: writes GGUF v3 files (metadata of every value type, tensors with given bytes,
// aligned data), e.g. tiny random-weight models for tokenizer and model tests.
//
//   loom::gguf::GgufWriter w;
//   w.AddString("general.architecture", "llama");
//   w.AddUint32("llama.block_count", 2);
//   w.AddStringArray("tokenizer.ggml.tokens", {"<s>", "</s>", "a"});
//   w.AddTensorF32("output_norm.weight", {64}, std::vector<float>(64, 1.0f));
//   w.AddTensor("token_embd.weight", loom::kernels::DType::kQ8_0, {64, 3}, q8_bytes);
//   LOOM_RETURN_IF_ERROR(w.WriteFile("/tmp/tiny.gguf"));  // or Serialize() for the bytes
//
// Keys and tensors are written in the order added. Serialize() validates what the reader would
// reject (duplicate keys / names, value ranges, array element types, tensor type, shape and byte
// count, alignment) and returns InvalidArgument naming the problem.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"
#include "kernels/dtype.h"

namespace loom::gguf {

// Value builders (for AddValue / AddArray, e.g. arrays of arrays). Integers fill `i` and `u` the
// way the reader does.
Value MakeInt(ValueType type, int64_t v);  // any integer type except kUint64
Value MakeUint64(uint64_t v);
Value MakeFloat(ValueType type, double v);  // kFloat32 or kFloat64
Value MakeBool(bool v);
Value MakeString(std::string v);
Value MakeArray(ValueType element_type, std::vector<Value> elements);

class GgufWriter {
 public:
  GgufWriter() = default;

  // Scalars.
  void AddUint8(std::string key, uint8_t v);
  void AddInt8(std::string key, int8_t v);
  void AddUint16(std::string key, uint16_t v);
  void AddInt16(std::string key, int16_t v);
  void AddUint32(std::string key, uint32_t v);
  void AddInt32(std::string key, int32_t v);
  void AddUint64(std::string key, uint64_t v);
  void AddInt64(std::string key, int64_t v);
  void AddFloat32(std::string key, float v);
  void AddFloat64(std::string key, double v);
  void AddBool(std::string key, bool v);
  void AddString(std::string key, std::string v);

  // Arrays.
  void AddStringArray(std::string key, std::vector<std::string> v);
  void AddInt32Array(std::string key, const std::vector<int32_t>& v);
  void AddUint32Array(std::string key, const std::vector<uint32_t>& v);
  void AddFloat32Array(std::string key, const std::vector<float>& v);
  void AddArray(std::string key, ValueType element_type, std::vector<Value> elements);

  // Any value, including nested arrays.
  void AddValue(std::string key, Value v);

  // Sets the data alignment (default 32) and writes it as `general.alignment` (uint32). It must
  // be a non-zero power of two; Serialize() checks.
  void SetAlignment(uint32_t alignment);

  // A tensor of `type` with dims {ne0, ne1, ...} (1 to 4 of them, ne0 contiguous) whose data is
  // `bytes`, which must be exactly the size the shape implies (kernels::RowBytes(type, ne0) *
  // rows).
  void AddTensor(std::string name, kernels::DType type, std::vector<int64_t> dims,
                 std::string bytes);
  void AddTensor(std::string name, kernels::DType type, std::vector<int64_t> dims,
                 std::span<const uint8_t> bytes);
  // Convenience: an F32 tensor from floats.
  void AddTensorF32(std::string name, std::vector<int64_t> dims, std::span<const float> values);

  // The complete file.
  absl::StatusOr<std::string> Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    kernels::DType type;
    std::vector<int64_t> dims;
    std::string bytes;
  };

  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace loom::gguf
