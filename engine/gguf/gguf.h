// GGUF v3 reader: maps a model file, validates every size and offset, and exposes its metadata and
// tensor table. A truncated or malformed file is an absl::Status naming the problem, never a crash.
//
//   using loom::gguf::GgufFile;
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> f, GgufFile::Open(path));
//   LOOM_ASSIGN_OR_RETURN(uint32_t layers, f->GetUint32("llama.block_count"));
//   const loom::gguf::TensorInfo* t = f->FindTensor("token_embd.weight");
//   // t->data points at t->size_bytes bytes inside the mapping, valid while `f` lives.
//
// Open() rejects, with a message naming the key or tensor: versions other than 3, truncation
// anywhere, counts and lengths larger than the bytes left, duplicate keys or tensor names,
// n_dims > 4, tensor types unknown to kernels::DType or not kernels::IsSupported, ne[0] not a
// multiple of the block size, size overflow, misaligned / out-of-file / overlapping tensor data,
// and a `general.alignment` that is not a non-zero power of two.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace loom::gguf {

// GGUF metadata value types (gguf_type).
enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

std::string_view ValueTypeName(ValueType t);

// One metadata value. Scalars of every integer type are kept in `i` (uint64 in `u`), floats in
// `f`, strings in `s`; arrays keep their element type and the elements in `array`.
// The reader also sets `u` for every non-negative integer and `i` for a uint64 that fits int64,
// so `i`/`u` can be read without switching on the integer type. Bools are in `b` only.
struct Value {
  ValueType type = ValueType::kUint8;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0.0;
  bool b = false;
  std::string s;
  ValueType array_type = ValueType::kUint8;  // element type when type == kArray
  std::vector<Value> array;
};

struct TensorInfo {
  std::string name;
  kernels::DType type = kernels::DType::kF32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension, as in ggml
  uint64_t offset = 0;           // relative to the start of the data section
  size_t size_bytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping

  int64_t NumElements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  size_t RowBytes() const { return kernels::RowBytes(type, ne[0]); }
};

class GgufFile {
 public:
  // Maps and parses the file at `path`.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory copy (tests and the fuzzer).
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(std::string bytes);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  size_t file_size() const { return size_; }
  // Offset of the (aligned) data section from the start of the file.
  size_t data_offset() const { return data_offset_; }

  // Metadata in file order, and lookup by key (nullptr when absent).
  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* Find(std::string_view key) const;

  // Typed getters: NotFound when absent, InvalidArgument when the stored type does not fit.
  // Integer getters accept any integer type whose value fits.
  absl::StatusOr<uint32_t> GetUint32(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt64(std::string_view key) const;
  absl::StatusOr<float> GetFloat32(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<int32_t>> GetInt32Array(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloat32Array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;
  // Like FindTensor, but NotFound (naming the tensor) when absent.
  absl::StatusOr<const TensorInfo*> GetTensor(std::string_view name) const;

 private:
  struct AlignedDelete {
    void operator()(uint8_t* p) const;
  };

  GgufFile() = default;
  absl::Status Parse();

  const uint8_t* base_ = nullptr;  // whole file
  size_t size_ = 0;
  void* mapping_ = nullptr;  // mmap'd region, or nullptr when the bytes live in `buffer_`
  // FromBuffer's copy: exactly size_ bytes (so sanitizers catch any overread), 64-byte aligned.
  std::unique_ptr<uint8_t[], AlignedDelete> buffer_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> metadata_;
  absl::flat_hash_map<std::string, size_t> metadata_index_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace loom::gguf
