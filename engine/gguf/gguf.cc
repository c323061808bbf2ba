#include "engine/gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace loom::gguf {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

constexpr uint32_t kVersion = 3;
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 16;
// Array elements across all metadata. A Value is ~100 bytes, so this caps metadata memory below
// 1 GiB even for a file made of 1-byte array elements; real vocabularies need ~1-2M values.
constexpr uint64_t kMaxMetadataValues = uint64_t{1} << 23;
constexpr std::align_val_t kBufferAlignment{64};
// Smallest encodings, used to bound counts by the bytes left before anything is allocated.
constexpr size_t kMinKvBytes = 8 + 4 + 1;              // key length, value type, 1-byte value
constexpr size_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset

// Debian's abseil is built with its own absl::string_view, which StrCat and the string-keyed hash
// maps need; std::string_view does not convert implicitly.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsKnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kFloat64); }

bool IsInteger(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kUint16:
    case ValueType::kInt16:
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kUint64:
    case ValueType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloat(ValueType t) { return t == ValueType::kFloat32 || t == ValueType::kFloat64; }

// Bytes of the smallest encoding of one value of type `t`.
size_t MinValueBytes(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
    case ValueType::kString:  // length
      return 8;
    case ValueType::kArray:  // element type + count
      return 12;
  }
  return 1;
}

void SetSigned(Value* v, int64_t x) {
  v->i = x;
  v->u = x >= 0 ? static_cast<uint64_t>(x) : 0;
}

void SetUnsigned(Value* v, uint64_t x) {
  v->u = x;
  v->i =
      x <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(x) : 0;
}

// True when the integer in `v` lies in [lo, hi].
bool IntFits(const Value& v, int64_t lo, uint64_t hi) {
  if (v.type == ValueType::kUint64)
    return (lo <= 0 || v.u >= static_cast<uint64_t>(lo)) && v.u <= hi;
  if (v.i < lo) return false;
  return v.i < 0 || static_cast<uint64_t>(v.i) <= hi;
}

std::string IntToString(const Value& v) {
  return v.type == ValueType::kUint64 ? absl::StrCat(v.u) : absl::StrCat(v.i);
}

absl::Status Malformed(std::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("malformed GGUF: ", AbslView(msg)));
}

absl::Status Truncated(std::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("truncated GGUF: ", AbslView(msg)));
}

// Checked a * b for non-negative int64 values.
bool MulInt64(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
bool MulSize(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Bounds-checked little-endian reads over [data, data + size), with the current location (metadata
// key / tensor info / array element) kept for error messages.
class Parser {
 public:
  Parser(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void EnterHeader() { Enter(Section::kHeader, 0); }
  void EnterKv(uint64_t index) { Enter(Section::kKv, index); }
  void EnterTensor(uint64_t index) { Enter(Section::kTensor, index); }
  void SetName(std::string_view name) { name_ = name; }

  std::string Where() const {
    std::string w;
    switch (section_) {
      case Section::kHeader:
        return "header";
      case Section::kKv:
        w = absl::StrCat("metadata key #", index_);
        break;
      case Section::kTensor:
        w = absl::StrCat("tensor info #", index_);
        break;
    }
    if (!name_.empty()) absl::StrAppend(&w, " ('", name_, "')");
    if (!elements_.empty()) {
      absl::StrAppend(&w, " element ");
      for (uint64_t e : elements_) absl::StrAppend(&w, "[", e, "]");
    }
    return w;
  }

  template <typename T>
  absl::Status Read(std::string_view what, T* out) {
    if (sizeof(T) > remaining()) {
      return Truncated(absl::StrFormat("%s: %s needs %d bytes at offset %d, only %d remain",
                                       Where(), what, sizeof(T), pos_, remaining()));
    }
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status ReadString(std::string_view what, std::string* out) {
    uint64_t len = 0;
    if (sizeof(len) > remaining()) {
      return Truncated(
          absl::StrFormat("%s: %s string length needs 8 bytes at offset %d, only %d "
                          "remain",
                          Where(), what, pos_, remaining()));
    }
    std::memcpy(&len, data_ + pos_, sizeof(len));
    pos_ += sizeof(len);
    if (len > remaining()) {
      return Truncated(absl::StrFormat("%s: %s string length %d exceeds remaining %d bytes",
                                       Where(), what, len, remaining()));
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return absl::OkStatus();
  }

  // Reads one value of `type` (arrays recursively) into `out`.
  absl::Status ReadValue(ValueType type, int depth, Value* out) {
    out->type = type;
    switch (type) {
      case ValueType::kUint8:
        return ReadInt<uint8_t>(out);
      case ValueType::kInt8:
        return ReadInt<int8_t>(out);
      case ValueType::kUint16:
        return ReadInt<uint16_t>(out);
      case ValueType::kInt16:
        return ReadInt<int16_t>(out);
      case ValueType::kUint32:
        return ReadInt<uint32_t>(out);
      case ValueType::kInt32:
        return ReadInt<int32_t>(out);
      case ValueType::kInt64:
        return ReadInt<int64_t>(out);
      case ValueType::kUint64: {
        uint64_t x = 0;
        LOOM_RETURN_IF_ERROR(Read("uint64 value", &x));
        SetUnsigned(out, x);
        return absl::OkStatus();
      }
      case ValueType::kFloat32: {
        float x = 0;
        LOOM_RETURN_IF_ERROR(Read("float32 value", &x));
        out->f = x;
        return absl::OkStatus();
      }
      case ValueType::kFloat64:
        return Read("float64 value", &out->f);
      case ValueType::kBool: {
        uint8_t x = 0;
        LOOM_RETURN_IF_ERROR(Read("bool value", &x));
        out->b = x != 0;
        return absl::OkStatus();
      }
      case ValueType::kString:
        return ReadString("value", &out->s);
      case ValueType::kArray:
        return ReadArray(depth, out);
    }
    return Malformed(
        absl::StrFormat("%s: unknown value type %d", Where(), static_cast<uint32_t>(type)));
  }

 private:
  enum class Section { kHeader, kKv, kTensor };

  void Enter(Section s, uint64_t index) {
    section_ = s;
    index_ = index;
    name_.clear();
    elements_.clear();
  }

  template <typename T>
  absl::Status ReadInt(Value* out) {
    T x = 0;
    LOOM_RETURN_IF_ERROR(Read(ValueTypeName(out->type), &x));
    SetSigned(out, static_cast<int64_t>(x));
    return absl::OkStatus();
  }

  absl::Status ReadArray(int depth, Value* out) {
    if (depth >= kMaxArrayDepth) {
      return Malformed(
          absl::StrFormat("%s: arrays nested deeper than %d levels", Where(), kMaxArrayDepth));
    }
    uint32_t elem_type = 0;
    LOOM_RETURN_IF_ERROR(Read("array element type", &elem_type));
    if (!IsKnownValueType(elem_type)) {
      return Malformed(absl::StrFormat("%s: unknown array element type %d", Where(), elem_type));
    }
    const ValueType et = static_cast<ValueType>(elem_type);
    uint64_t count = 0;
    LOOM_RETURN_IF_ERROR(Read("array count", &count));
    const size_t min_bytes = MinValueBytes(et);
    if (count > remaining() / min_bytes) {
      return Truncated(absl::StrFormat(
          "%s: array count %d (of %s, at least %d bytes each) exceeds remaining %d bytes", Where(),
          count, ValueTypeName(et), min_bytes, remaining()));
    }
    if (count > values_left_) {
      return Malformed(absl::StrFormat(
          "%s: array count %d exceeds the limit of %d array elements in all metadata", Where(),
          count, kMaxMetadataValues));
    }
    values_left_ -= count;
    out->array_type = et;
    out->array.resize(count);
    elements_.push_back(0);
    for (uint64_t j = 0; j < count; ++j) {
      elements_.back() = j;
      LOOM_RETURN_IF_ERROR(ReadValue(et, depth + 1, &out->array[j]));
    }
    elements_.pop_back();
    return absl::OkStatus();
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  Section section_ = Section::kHeader;
  uint64_t index_ = 0;
  std::string name_;
  std::vector<uint64_t> elements_;  // array element path, innermost last
  uint64_t values_left_ = kMaxMetadataValues;
};

// Validates a tensor's type and shape and computes its size in bytes.
absl::Status ComputeTensorSize(uint32_t raw_type, TensorInfo* t) {
  const auto type = static_cast<kernels::DType>(raw_type);
  const int block = kernels::BlockSize(type);
  if (block == 0) {
    return Malformed(absl::StrFormat("unknown tensor type %d for tensor '%s'", raw_type, t->name));
  }
  t->type = type;
  if (!kernels::IsSupported(type)) {
    return absl::UnimplementedError(
        absl::StrFormat("GGUF tensor '%s' has type %s (%d), which Loom does not support", t->name,
                        kernels::DTypeName(type), raw_type));
  }
  if (t->ne[0] % block != 0) {
    return Malformed(
        absl::StrFormat("tensor '%s': ne[0] = %d is not a multiple of the %s block size %d",
                        t->name, t->ne[0], kernels::DTypeName(type), block));
  }
  // The product of the non-zero dims must fit int64, so that no partial product (element count,
  // row count, in any order) can overflow downstream, even when some dim is 0.
  int64_t nonzero = 1;
  bool ok = true;
  for (int d = 0; d < kMaxDims; ++d) {
    if (t->ne[d] > 0) ok = ok && MulInt64(nonzero, t->ne[d], &nonzero);
  }
  const int64_t rows = ok ? t->ne[1] * t->ne[2] * t->ne[3] : 0;
  uint64_t bytes = 0;
  ok = ok && MulSize(static_cast<uint64_t>(t->ne[0] / block), kernels::TypeSize(type), &bytes) &&
       MulSize(bytes, static_cast<uint64_t>(rows), &bytes);
  if (!ok || bytes > std::numeric_limits<size_t>::max()) {
    return Malformed(absl::StrFormat("tensor '%s': shape {%d, %d, %d, %d} of type %s overflows",
                                     t->name, t->ne[0], t->ne[1], t->ne[2], t->ne[3],
                                     kernels::DTypeName(type)));
  }
  t->size_bytes = static_cast<size_t>(bytes);
  return absl::OkStatus();
}

}  // namespace

std::string_view ValueTypeName(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
      return "uint8";
    case ValueType::kInt8:
      return "int8";
    case ValueType::kUint16:
      return "uint16";
    case ValueType::kInt16:
      return "int16";
    case ValueType::kUint32:
      return "uint32";
    case ValueType::kInt32:
      return "int32";
    case ValueType::kFloat32:
      return "float32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kUint64:
      return "uint64";
    case ValueType::kInt64:
      return "int64";
    case ValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

void GgufFile::AlignedDelete::operator()(uint8_t* p) const {
  ::operator delete[](p, kBufferAlignment);
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open GGUF file '", path, "'"));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat("cannot stat GGUF file '", path, "'"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("cannot mmap GGUF file '", path, "'"));
    }
    f->mapping_ = m;
    f->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  if (absl::Status s = f->Parse(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(std::string bytes) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->size_ = bytes.size();
  auto* p = static_cast<uint8_t*>(::operator new[](bytes.size(), kBufferAlignment, std::nothrow));
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes.size(), " bytes for a GGUF buffer"));
  }
  f->buffer_.reset(p);
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  f->base_ = p;
  LOOM_RETURN_IF_ERROR(f->Parse());
  return f;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

absl::Status GgufFile::Parse() {
  Parser p(base_, size_);
  p.EnterHeader();

  char magic[4] = {};
  if (size_ < sizeof(magic)) {
    return Truncated(absl::StrFormat("file is %d bytes, too small for the 4-byte magic", size_));
  }
  LOOM_RETURN_IF_ERROR(p.Read("magic", &magic));
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not a GGUF file: magic is %02x %02x %02x %02x, expected 47 47 55 46 (\"GGUF\")",
        static_cast<uint8_t>(magic[0]), static_cast<uint8_t>(magic[1]),
        static_cast<uint8_t>(magic[2]), static_cast<uint8_t>(magic[3])));
  }
  LOOM_RETURN_IF_ERROR(p.Read("version", &version_));
  if (version_ == 1 || version_ == 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "unsupported GGUF version %d: only version 3 is supported (re-convert the model with a "
        "current llama.cpp)",
        version_));
  }
  if (version_ != kVersion) {
    const bool big_endian = __builtin_bswap32(version_) == kVersion;
    return absl::InvalidArgumentError(absl::StrFormat(
        "unsupported GGUF version %d: only version 3 is supported%s", version_,
        big_endian ? " (this looks like a big-endian file, which Loom cannot read)" : ""));
  }
  uint64_t n_tensors = 0;
  uint64_t n_kv = 0;
  LOOM_RETURN_IF_ERROR(p.Read("tensor count", &n_tensors));
  LOOM_RETURN_IF_ERROR(p.Read("metadata key count", &n_kv));
  if (n_kv > p.remaining() / kMinKvBytes) {
    return Truncated(absl::StrFormat(
        "header: metadata key count %d (at least %d bytes each) exceeds remaining %d bytes", n_kv,
        kMinKvBytes, p.remaining()));
  }
  if (n_tensors > p.remaining() / kMinTensorInfoBytes ||
      n_kv * kMinKvBytes + n_tensors * kMinTensorInfoBytes > p.remaining()) {
    return Truncated(absl::StrFormat(
        "header: tensor count %d (at least %d bytes each) and metadata key count %d exceed "
        "remaining %d bytes",
        n_tensors, kMinTensorInfoBytes, n_kv, p.remaining()));
  }

  metadata_.reserve(n_kv);
  metadata_index_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    p.EnterKv(i);
    std::string key;
    LOOM_RETURN_IF_ERROR(p.ReadString("key", &key));
    p.SetName(key);
    uint32_t type = 0;
    LOOM_RETURN_IF_ERROR(p.Read("value type", &type));
    if (!IsKnownValueType(type)) {
      return Malformed(absl::StrFormat("%s: unknown value type %d", p.Where(), type));
    }
    Value value;
    LOOM_RETURN_IF_ERROR(p.ReadValue(static_cast<ValueType>(type), 0, &value));
    const auto [it, inserted] = metadata_index_.emplace(key, metadata_.size());
    if (!inserted) {
      return Malformed(
          absl::StrFormat("duplicate metadata key '%s' (keys #%d and #%d)", key, it->second, i));
    }
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  alignment_ = 32;
  if (const Value* a = Find("general.alignment"); a != nullptr) {
    if (!IsInteger(a->type)) {
      return Malformed(absl::StrFormat("general.alignment has type %s, expected uint32",
                                       ValueTypeName(a->type)));
    }
    if (!IntFits(*a, 1, std::numeric_limits<uint32_t>::max()) || !std::has_single_bit(a->u)) {
      return Malformed(
          absl::StrFormat("general.alignment %s is not a non-zero power of two", IntToString(*a)));
    }
    alignment_ = static_cast<size_t>(a->u);
  }

  tensors_.reserve(n_tensors);
  tensor_index_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    p.EnterTensor(i);
    TensorInfo t;
    LOOM_RETURN_IF_ERROR(p.ReadString("name", &t.name));
    p.SetName(t.name);
    uint32_t n_dims = 0;
    LOOM_RETURN_IF_ERROR(p.Read("n_dims", &n_dims));
    if (n_dims > kMaxDims) {
      return Malformed(
          absl::StrFormat("%s: n_dims %d exceeds the maximum of %d", p.Where(), n_dims, kMaxDims));
    }
    t.n_dims = static_cast<int>(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      LOOM_RETURN_IF_ERROR(p.Read("dimension", &ne));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Malformed(absl::StrFormat("%s: ne[%d] = %d does not fit int64", p.Where(), d, ne));
      }
      t.ne[d] = static_cast<int64_t>(ne);
    }
    uint32_t type = 0;
    LOOM_RETURN_IF_ERROR(p.Read("type", &type));
    LOOM_RETURN_IF_ERROR(p.Read("data offset", &t.offset));
    LOOM_RETURN_IF_ERROR(ComputeTensorSize(type, &t));
    const auto [it, inserted] = tensor_index_.emplace(t.name, tensors_.size());
    if (!inserted) {
      return Malformed(absl::StrFormat("duplicate tensor name '%s' (tensor infos #%d and #%d)",
                                       t.name, it->second, i));
    }
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const size_t pos = p.pos();
  const size_t pad = (alignment_ - pos % alignment_) % alignment_;
  if (pad > size_ - pos) {
    if (!tensors_.empty()) {
      return Truncated(absl::StrFormat(
          "data section would start at offset %d (aligned to %d) but the file is %d bytes",
          pos + pad, alignment_, size_));
    }
    data_offset_ = size_;  // no tensors: the padding may be missing
  } else {
    data_offset_ = pos + pad;
  }
  const size_t data_size = size_ - data_offset_;
  for (TensorInfo& t : tensors_) {
    if (t.offset % alignment_ != 0) {
      return Malformed(
          absl::StrFormat("tensor '%s': data offset %d is not a multiple of the "
                          "alignment %d",
                          t.name, t.offset, alignment_));
    }
    if (t.offset > data_size || t.size_bytes > data_size - t.offset) {
      return Truncated(absl::StrFormat(
          "tensor '%s': %d bytes at data offset %d run past the end of the data section (%d "
          "bytes at file offset %d)",
          t.name, t.size_bytes, t.offset, data_size, data_offset_));
    }
    t.data = base_ + data_offset_ + t.offset;
  }

  // No two tensors may share bytes.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) {
    if (t.size_bytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo& prev = *by_offset[k - 1];
    const TensorInfo& cur = *by_offset[k];
    if (cur.offset < prev.offset + prev.size_bytes) {
      return Malformed(absl::StrFormat(
          "tensors '%s' (data offset %d, %d bytes) and '%s' (data offset %d) overlap", prev.name,
          prev.offset, prev.size_bytes, cur.name, cur.offset));
    }
  }
  return absl::OkStatus();
}

const Value* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(AbslView(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {

absl::StatusOr<const Value*> Lookup(const GgufFile& f, std::string_view key) {
  const Value* v = f.Find(key);
  if (v == nullptr)
    return absl::NotFoundError(absl::StrCat("GGUF metadata key '", AbslView(key), "' not found"));
  return v;
}

absl::Status WrongType(std::string_view key, const Value& v, std::string_view expected) {
  std::string type(ValueTypeName(v.type));
  if (v.type == ValueType::kArray) {
    absl::StrAppend(&type, " of ", AbslView(ValueTypeName(v.array_type)));
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("GGUF metadata key '%s' has type %s, expected %s", key, type, expected));
}

absl::Status DoesNotFit(std::string_view key, const Value& v, std::string_view target) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "GGUF metadata key '%s' value %s does not fit %s", key, IntToString(v), target));
}

absl::StatusOr<const Value*> LookupArray(const GgufFile& f, std::string_view key,
                                         bool (*elem_ok)(ValueType), std::string_view expected) {
  LOOM_ASSIGN_OR_RETURN(const Value* v, Lookup(f, key));
  if (v->type != ValueType::kArray || !elem_ok(v->array_type)) return WrongType(key, *v, expected);
  return v;
}

}  // namespace

absl::StatusOr<uint32_t> GgufFile::GetUint32(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(const Value* v, Lookup(*this, key));
  if (!IsInteger(v->type)) return WrongType(key, *v, "an integer");
  if (!IntFits(*v, 0, std::numeric_limits<uint32_t>::max())) return DoesNotFit(key, *v, "uint32");
  return static_cast<uint32_t>(v->u);
}

absl::StatusOr<int64_t> GgufFile::GetInt64(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(const Value* v, Lookup(*this, key));
  if (!IsInteger(v->type)) return WrongType(key, *v, "an integer");
  if (!IntFits(*v, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    return DoesNotFit(key, *v, "int64");
  }
  return v->i;
}

absl::StatusOr<float> GgufFile::GetFloat32(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(const Value* v, Lookup(*this, key));
  if (!IsFloat(v->type)) return WrongType(key, *v, "float32 or float64");
  return static_cast<float>(v->f);
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(const Value* v, Lookup(*this, key));
  if (v->type != ValueType::kBool) return WrongType(key, *v, "bool");
  return v->b;
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(const Value* v, Lookup(*this, key));
  if (v->type != ValueType::kString) return WrongType(key, *v, "string");
  return v->s;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(
      const Value* v,
      LookupArray(
          *this, key, [](ValueType t) { return t == ValueType::kString; }, "array of string"));
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const Value& e : v->array) out.push_back(e.s);
  return out;
}

absl::StatusOr<std::vector<int32_t>> GgufFile::GetInt32Array(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(const Value* v,
                        LookupArray(*this, key, IsInteger, "array of an integer type"));
  std::vector<int32_t> out;
  out.reserve(v->array.size());
  for (size_t j = 0; j < v->array.size(); ++j) {
    const Value& e = v->array[j];
    if (!IntFits(e, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max())) {
      return DoesNotFit(absl::StrFormat("%s[%d]", key, j), e, "int32");
    }
    out.push_back(static_cast<int32_t>(e.i));
  }
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloat32Array(std::string_view key) const {
  LOOM_ASSIGN_OR_RETURN(const Value* v,
                        LookupArray(*this, key, IsFloat, "array of float32 or float64"));
  std::vector<float> out;
  out.reserve(v->array.size());
  for (const Value& e : v->array) out.push_back(static_cast<float>(e.f));
  return out;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(AbslView(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const TensorInfo*> GgufFile::GetTensor(std::string_view name) const {
  const TensorInfo* t = FindTensor(name);
  if (t == nullptr)
    return absl::NotFoundError(absl::StrCat("GGUF tensor '", AbslView(name), "' not found"));
  return t;
}

}  // namespace loom::gguf
