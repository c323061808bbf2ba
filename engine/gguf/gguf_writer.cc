#include "engine/gguf/gguf_writer.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace loom::gguf {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the GGUF writer assumes a little-endian host");

constexpr uint32_t kDefaultAlignment = 32;

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

void PutString(std::string* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s);
}

// Checks that `v` is representable as its type, then appends its encoding (without the type tag).
absl::Status PutValue(std::string* out, const Value& v, std::string_view where) {
  auto check_int = [&](int64_t lo, int64_t hi) -> absl::Status {
    if (v.i < lo || v.i > hi) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: value %d does not fit %s", where, v.i, ValueTypeName(v.type)));
    }
    return absl::OkStatus();
  };
  switch (v.type) {
    case ValueType::kUint8:
      LOOM_RETURN_IF_ERROR(check_int(0, std::numeric_limits<uint8_t>::max()));
      Put<uint8_t>(out, static_cast<uint8_t>(v.i));
      return absl::OkStatus();
    case ValueType::kInt8:
      LOOM_RETURN_IF_ERROR(check_int(std::numeric_limits<int8_t>::min(), 127));
      Put<int8_t>(out, static_cast<int8_t>(v.i));
      return absl::OkStatus();
    case ValueType::kUint16:
      LOOM_RETURN_IF_ERROR(check_int(0, std::numeric_limits<uint16_t>::max()));
      Put<uint16_t>(out, static_cast<uint16_t>(v.i));
      return absl::OkStatus();
    case ValueType::kInt16:
      LOOM_RETURN_IF_ERROR(
          check_int(std::numeric_limits<int16_t>::min(), std::numeric_limits<int16_t>::max()));
      Put<int16_t>(out, static_cast<int16_t>(v.i));
      return absl::OkStatus();
    case ValueType::kUint32:
      LOOM_RETURN_IF_ERROR(check_int(0, std::numeric_limits<uint32_t>::max()));
      Put<uint32_t>(out, static_cast<uint32_t>(v.i));
      return absl::OkStatus();
    case ValueType::kInt32:
      LOOM_RETURN_IF_ERROR(
          check_int(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
      Put<int32_t>(out, static_cast<int32_t>(v.i));
      return absl::OkStatus();
    case ValueType::kUint64:
      Put<uint64_t>(out, v.u);
      return absl::OkStatus();
    case ValueType::kInt64:
      Put<int64_t>(out, v.i);
      return absl::OkStatus();
    case ValueType::kFloat32:
      Put<float>(out, static_cast<float>(v.f));
      return absl::OkStatus();
    case ValueType::kFloat64:
      Put<double>(out, v.f);
      return absl::OkStatus();
    case ValueType::kBool:
      Put<uint8_t>(out, v.b ? 1 : 0);
      return absl::OkStatus();
    case ValueType::kString:
      PutString(out, v.s);
      return absl::OkStatus();
    case ValueType::kArray:
      Put<uint32_t>(out, static_cast<uint32_t>(v.array_type));
      Put<uint64_t>(out, v.array.size());
      for (size_t j = 0; j < v.array.size(); ++j) {
        const Value& e = v.array[j];
        if (e.type != v.array_type) {
          return absl::InvalidArgumentError(
              absl::StrFormat("%s: element %d has type %s in an array of %s", where, j,
                              ValueTypeName(e.type), ValueTypeName(v.array_type)));
        }
        LOOM_RETURN_IF_ERROR(PutValue(out, e, absl::StrFormat("%s[%d]", where, j)));
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: unknown value type %d", where, static_cast<uint32_t>(v.type)));
}

// Expected data size of a tensor; validates the shape the way the reader does.
absl::StatusOr<size_t> TensorBytes(std::string_view name, kernels::DType type,
                                   const std::vector<int64_t>& dims) {
  const int block = kernels::BlockSize(type);
  if (block == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s': unknown type %d", name, static_cast<uint32_t>(type)));
  }
  if (dims.empty() || dims.size() > 4) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s': %d dims, expected 1 to 4", name, dims.size()));
  }
  for (int64_t d : dims) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor '%s': negative dim %d", name, d));
    }
  }
  if (dims[0] % block != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s': ne[0] = %d is not a multiple of the %s block size %d", name,
                        dims[0], kernels::DTypeName(type), block));
  }
  uint64_t bytes = 0;
  bool ok = !__builtin_mul_overflow(static_cast<uint64_t>(dims[0] / block), kernels::TypeSize(type),
                                    &bytes);
  for (size_t d = 1; d < dims.size(); ++d) {
    ok = ok && !__builtin_mul_overflow(bytes, static_cast<uint64_t>(dims[d]), &bytes);
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrFormat("tensor '%s': size overflows", name));
  }
  return static_cast<size_t>(bytes);
}

void PadTo(std::string* out, size_t alignment) {
  out->append((alignment - out->size() % alignment) % alignment, '\0');
}

}  // namespace

Value MakeInt(ValueType type, int64_t v) {
  Value out;
  out.type = type;
  out.i = v;
  out.u = v >= 0 ? static_cast<uint64_t>(v) : 0;
  return out;
}

Value MakeUint64(uint64_t v) {
  Value out;
  out.type = ValueType::kUint64;
  out.u = v;
  out.i =
      v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(v) : 0;
  return out;
}

Value MakeFloat(ValueType type, double v) {
  Value out;
  out.type = type;
  out.f = type == ValueType::kFloat32 ? static_cast<double>(static_cast<float>(v)) : v;
  return out;
}

Value MakeBool(bool v) {
  Value out;
  out.type = ValueType::kBool;
  out.b = v;
  return out;
}

Value MakeString(std::string v) {
  Value out;
  out.type = ValueType::kString;
  out.s = std::move(v);
  return out;
}

Value MakeArray(ValueType element_type, std::vector<Value> elements) {
  Value out;
  out.type = ValueType::kArray;
  out.array_type = element_type;
  out.array = std::move(elements);
  return out;
}

void GgufWriter::AddUint8(std::string key, uint8_t v) {
  AddValue(std::move(key), MakeInt(ValueType::kUint8, v));
}
void GgufWriter::AddInt8(std::string key, int8_t v) {
  AddValue(std::move(key), MakeInt(ValueType::kInt8, v));
}
void GgufWriter::AddUint16(std::string key, uint16_t v) {
  AddValue(std::move(key), MakeInt(ValueType::kUint16, v));
}
void GgufWriter::AddInt16(std::string key, int16_t v) {
  AddValue(std::move(key), MakeInt(ValueType::kInt16, v));
}
void GgufWriter::AddUint32(std::string key, uint32_t v) {
  AddValue(std::move(key), MakeInt(ValueType::kUint32, v));
}
void GgufWriter::AddInt32(std::string key, int32_t v) {
  AddValue(std::move(key), MakeInt(ValueType::kInt32, v));
}
void GgufWriter::AddUint64(std::string key, uint64_t v) { AddValue(std::move(key), MakeUint64(v)); }
void GgufWriter::AddInt64(std::string key, int64_t v) {
  AddValue(std::move(key), MakeInt(ValueType::kInt64, v));
}
void GgufWriter::AddFloat32(std::string key, float v) {
  AddValue(std::move(key), MakeFloat(ValueType::kFloat32, v));
}
void GgufWriter::AddFloat64(std::string key, double v) {
  AddValue(std::move(key), MakeFloat(ValueType::kFloat64, v));
}
void GgufWriter::AddBool(std::string key, bool v) { AddValue(std::move(key), MakeBool(v)); }
void GgufWriter::AddString(std::string key, std::string v) {
  AddValue(std::move(key), MakeString(std::move(v)));
}

void GgufWriter::AddStringArray(std::string key, std::vector<std::string> v) {
  std::vector<Value> elems;
  elems.reserve(v.size());
  for (std::string& s : v) elems.push_back(MakeString(std::move(s)));
  AddArray(std::move(key), ValueType::kString, std::move(elems));
}

void GgufWriter::AddInt32Array(std::string key, const std::vector<int32_t>& v) {
  std::vector<Value> elems;
  elems.reserve(v.size());
  for (int32_t x : v) elems.push_back(MakeInt(ValueType::kInt32, x));
  AddArray(std::move(key), ValueType::kInt32, std::move(elems));
}

void GgufWriter::AddUint32Array(std::string key, const std::vector<uint32_t>& v) {
  std::vector<Value> elems;
  elems.reserve(v.size());
  for (uint32_t x : v) elems.push_back(MakeInt(ValueType::kUint32, x));
  AddArray(std::move(key), ValueType::kUint32, std::move(elems));
}

void GgufWriter::AddFloat32Array(std::string key, const std::vector<float>& v) {
  std::vector<Value> elems;
  elems.reserve(v.size());
  for (float x : v) elems.push_back(MakeFloat(ValueType::kFloat32, x));
  AddArray(std::move(key), ValueType::kFloat32, std::move(elems));
}

void GgufWriter::AddArray(std::string key, ValueType element_type, std::vector<Value> elements) {
  AddValue(std::move(key), MakeArray(element_type, std::move(elements)));
}

void GgufWriter::AddValue(std::string key, Value v) {
  metadata_.emplace_back(std::move(key), std::move(v));
}

void GgufWriter::SetAlignment(uint32_t alignment) {
  for (auto& [key, value] : metadata_) {
    if (key == "general.alignment") {
      value = MakeInt(ValueType::kUint32, alignment);
      return;
    }
  }
  AddUint32("general.alignment", alignment);
}

void GgufWriter::AddTensor(std::string name, kernels::DType type, std::vector<int64_t> dims,
                           std::string bytes) {
  tensors_.push_back({std::move(name), type, std::move(dims), std::move(bytes)});
}

void GgufWriter::AddTensor(std::string name, kernels::DType type, std::vector<int64_t> dims,
                           std::span<const uint8_t> bytes) {
  AddTensor(std::move(name), type, std::move(dims),
            std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void GgufWriter::AddTensorF32(std::string name, std::vector<int64_t> dims,
                              std::span<const float> values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  AddTensor(std::move(name), kernels::DType::kF32, std::move(dims), std::move(bytes));
}

absl::StatusOr<std::string> GgufWriter::Serialize() const {
  // Alignment from general.alignment, as the reader will see it.
  uint64_t alignment = kDefaultAlignment;
  absl::flat_hash_set<std::string_view> keys;
  for (const auto& [key, value] : metadata_) {
    if (!keys.insert(key).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate metadata key '", key, "'"));
    }
    if (key == "general.alignment") {
      alignment = value.type == ValueType::kUint64 ? value.u
                  : value.i > 0                    ? static_cast<uint64_t>(value.i)
                                                   : 0;
      if (value.type != ValueType::kUint32 || !std::has_single_bit(alignment)) {
        return absl::InvalidArgumentError(
            "general.alignment must be a uint32 holding a non-zero power of two");
      }
    }
  }

  std::string out;
  out.append("GGUF", 4);
  Put<uint32_t>(&out, 3);
  Put<uint64_t>(&out, tensors_.size());
  Put<uint64_t>(&out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    PutString(&out, key);
    Put<uint32_t>(&out, static_cast<uint32_t>(value.type));
    LOOM_RETURN_IF_ERROR(PutValue(&out, value, absl::StrCat("metadata key '", key, "'")));
  }

  absl::flat_hash_set<std::string_view> names;
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", t.name, "'"));
    }
    LOOM_ASSIGN_OR_RETURN(size_t expected, TensorBytes(t.name, t.type, t.dims));
    if (t.bytes.size() != expected) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s': got %d bytes, expected %d for %s {%s}", t.name, t.bytes.size(), expected,
          kernels::DTypeName(t.type), absl::StrJoin(t.dims, ", ")));
    }
    PutString(&out, t.name);
    Put<uint32_t>(&out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(&out, static_cast<uint64_t>(d));
    Put<uint32_t>(&out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(&out, offset);
    offset += (expected + alignment - 1) / alignment * alignment;
  }

  PadTo(&out, alignment);
  for (const Tensor& t : tensors_) {
    out.append(t.bytes);
    PadTo(&out, alignment);
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  LOOM_ASSIGN_OR_RETURN(std::string bytes, Serialize());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot create '", path, "'"));
  }
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool close_ok = std::fclose(f) == 0;
  if (written != bytes.size() || !close_ok) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace loom::gguf
