// Malformed GGUF input: every failure must be a clean absl::Status naming the problem (never a
// crash, an exception or a huge allocation). Files are hand-built byte by byte.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/gguf/gguf.h"
#include "engine/gguf/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::gguf {
namespace {

using kernels::DType;
using ::testing::HasSubstr;

constexpr uint64_t kHuge63 = uint64_t{1} << 63;
constexpr uint64_t kHuge60 = uint64_t{1} << 60;

// Little-endian byte builder.
class Raw {
 public:
  Raw& U8(uint8_t v) { return Put(v); }
  Raw& U32(uint32_t v) { return Put(v); }
  Raw& U64(uint64_t v) { return Put(v); }
  Raw& Str(std::string_view s) {
    U64(s.size());
    bytes_.append(s);
    return *this;
  }
  Raw& Bytes(std::string_view s) {
    bytes_.append(s);
    return *this;
  }
  Raw& Pad(size_t alignment) {
    bytes_.append((alignment - bytes_.size() % alignment) % alignment, '\0');
    return *this;
  }
  Raw& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return Bytes("GGUF").U32(version).U64(n_tensors).U64(n_kv);
  }
  // A tensor info record.
  Raw& Tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) U64(d);
    return U32(type).U64(offset);
  }
  const std::string& bytes() const { return bytes_; }

 private:
  template <typename T>
  Raw& Put(T v) {
    bytes_.append(reinterpret_cast<const char*>(&v), sizeof(v));
    return *this;
  }
  std::string bytes_;
};

// The error message of parsing `bytes`; "ok" when it parses.
std::string Error(const std::string& bytes) {
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(bytes);
  if (f.ok()) return "ok";
  EXPECT_NE(f.status().code(), absl::StatusCode::kOk);
  return std::string(f.status().message());
}

// One F32 {8} tensor (32 bytes) at `offset` with `data_bytes` of data after aligned infos.
std::string OneTensorFile(std::vector<uint64_t> ne, uint32_t type, uint64_t offset,
                          size_t data_bytes = 32, std::string_view name = "x") {
  Raw r;
  r.Header(1, 0).Tensor(name, std::move(ne), type, offset).Pad(32);
  r.Bytes(std::string(data_bytes, '\0'));
  return r.bytes();
}

TEST(GgufMalformed, HandBuiltBaselineParses) {
  EXPECT_EQ(Error(OneTensorFile({8}, 0, 0)), "ok");
  EXPECT_EQ(Error(Raw().Header(0, 1).Str("k").U32(4).U32(7).bytes()), "ok");
}

TEST(GgufMalformed, EveryTruncationOfAValidFileFails) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.block_count", 2);
  w.AddBool("b", true);
  w.AddFloat64("f", 0.5);
  w.AddStringArray("tokens", {"<s>", "a", "bc"});
  w.AddArray("nested", ValueType::kArray,
             {MakeArray(ValueType::kInt8, {MakeInt(ValueType::kInt8, 1)}),
              MakeArray(ValueType::kUint64, {})});
  w.AddInt32Array("types", {1, 2, 3});
  w.AddTensor("a", DType::kQ8_0, {32, 2}, std::string(68, '\x11'));
  w.AddTensorF32("b", {3}, std::vector<float>{1, 2, 3});
  absl::StatusOr<std::string> full = w.Serialize();
  ASSERT_TRUE(full.ok()) << full.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(*full);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo& last = (*f)->tensors().back();
  const size_t data_end = (*f)->data_offset() + last.offset + last.size_bytes;
  ASSERT_LT(data_end, full->size());  // the writer pads the last tensor too

  for (size_t n = 0; n < data_end; ++n) {
    absl::StatusOr<std::unique_ptr<GgufFile>> t = GgufFile::FromBuffer(full->substr(0, n));
    ASSERT_FALSE(t.ok()) << "truncated to " << n << " bytes";
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("truncated GGUF")) << n;
  }
  for (size_t n = data_end; n <= full->size(); ++n) {
    EXPECT_TRUE(GgufFile::FromBuffer(full->substr(0, n)).ok()) << n;
  }
}

TEST(GgufMalformed, EverySingleByteCorruptionIsHandled) {
  // Not every flip is an error (a flipped tensor byte is still valid), but none may crash.
  GgufWriter w;
  w.AddStringArray("tokens", {"<s>", "a"});
  w.AddArray("nested", ValueType::kArray, {MakeArray(ValueType::kInt8, {})});
  w.AddTensorF32("b", {3}, std::vector<float>{1, 2, 3});
  const std::string full = *w.Serialize();
  for (size_t n = 0; n < full.size(); ++n) {
    for (uint8_t v : {0x00, 0x01, 0x07, 0x0d, 0x80, 0xff}) {
      std::string bad = full;
      bad[n] = static_cast<char>(v);
      (void)GgufFile::FromBuffer(bad);
    }
  }
}

TEST(GgufMalformed, MagicAndVersion) {
  EXPECT_THAT(Error(""), HasSubstr("truncated GGUF: file is 0 bytes"));
  EXPECT_THAT(Error("GGU"), HasSubstr("truncated GGUF: file is 3 bytes"));
  EXPECT_THAT(Error(Raw().Bytes("GGML").U32(3).U64(0).U64(0).bytes()),
              HasSubstr("not a GGUF file: magic is 47 47 4d 4c"));
  EXPECT_THAT(Error(Raw().Header(0, 0, 1).bytes()),
              HasSubstr("unsupported GGUF version 1: only version 3 is supported"));
  EXPECT_THAT(Error(Raw().Header(0, 0, 2).bytes()),
              HasSubstr("unsupported GGUF version 2: only version 3 is supported"));
  EXPECT_THAT(Error(Raw().Header(0, 0, 4).bytes()), HasSubstr("unsupported GGUF version 4"));
  EXPECT_THAT(Error(Raw().Header(0, 0, 0x03000000).bytes()), HasSubstr("big-endian"));
  EXPECT_THAT(Error(Raw().Bytes("GGUF").U32(3).U64(0).bytes()),
              HasSubstr("truncated GGUF: header: metadata key count needs 8 bytes at offset 16"));
  EXPECT_EQ(Error(Raw().Header(0, 0).bytes()), "ok");
}

TEST(GgufMalformed, HugeCounts) {
  EXPECT_THAT(Error(Raw().Header(0, kHuge63).bytes()),
              HasSubstr("metadata key count 9223372036854775808 (at least 13 bytes each) exceeds "
                        "remaining 0 bytes"));
  EXPECT_THAT(Error(Raw().Header(kHuge60, 0).bytes()),
              HasSubstr("tensor count 1152921504606846976"));
  EXPECT_THAT(
      Error(Raw().Header(std::numeric_limits<uint64_t>::max(), 1).Str("k").U32(0).U8(1).bytes()),
      HasSubstr("truncated GGUF: header: tensor count"));
  // Counts that fit individually but not together.
  EXPECT_THAT(Error(Raw().Header(1, 1).Str("k").U32(0).U8(1).Bytes(std::string(10, '\0')).bytes()),
              HasSubstr("truncated GGUF: header: tensor count 1"));
}

TEST(GgufMalformed, HugeStringLengths) {
  EXPECT_THAT(Error(Raw().Header(0, 1).U64(kHuge63).Bytes(std::string(100, 'k')).bytes()),
              HasSubstr("truncated GGUF: metadata key #0: key string length 9223372036854775808 "
                        "exceeds remaining 100 bytes"));
  EXPECT_THAT(Error(Raw().Header(0, 1).Str("k").U32(8).U64(999999).Bytes("abc").bytes()),
              HasSubstr("metadata key #0 ('k'): value string length 999999 exceeds remaining 3"));
  EXPECT_THAT(Error(Raw().Header(0, 1).Str("k").U32(8).U64(~uint64_t{0}).Bytes("abcdef").bytes()),
              HasSubstr("string length 18446744073709551615 exceeds remaining 6"));
  EXPECT_THAT(Error(Raw().Header(1, 0).U64(kHuge63).Bytes(std::string(40, 'n')).bytes()),
              HasSubstr("truncated GGUF: tensor info #0: name string length 9223372036854775808"));
  // Inside an array of strings: the element is named.
  EXPECT_THAT(Error(Raw()
                        .Header(0, 1)
                        .Str("tok")
                        .U32(9)
                        .U32(8)
                        .U64(2)
                        .Str("a")
                        .U64(kHuge63)
                        .Bytes(std::string(16, 'x'))
                        .bytes()),
              HasSubstr("metadata key #0 ('tok') element [1]: value string length "
                        "9223372036854775808 exceeds remaining 16"));
}

TEST(GgufMalformed, HugeArrayCounts) {
  EXPECT_THAT(
      Error(Raw().Header(0, 1).Str("a").U32(9).U32(0).U64(kHuge60).Bytes("xyz").bytes()),
      HasSubstr("metadata key #0 ('a'): array count 1152921504606846976 (of uint8, at least "
                "1 bytes each) exceeds remaining 3 bytes"));
  EXPECT_THAT(
      Error(Raw().Header(0, 1).Str("a").U32(9).U32(8).U64(4).Bytes(std::string(31, 0)).bytes()),
      HasSubstr("array count 4 (of string, at least 8 bytes each) exceeds remaining 31"));
  // Nested: the inner count is checked against what is left too.
  EXPECT_THAT(Error(Raw().Header(0, 1).Str("a").U32(9).U32(9).U64(1).U32(12).U64(kHuge63).bytes()),
              HasSubstr("element [0]: array count 9223372036854775808 (of float64"));
  // Counts the bytes allow are still capped in total (memory is ~100 bytes per element).
  constexpr uint64_t kLimit = uint64_t{1} << 23;
  const std::string many(kLimit, '\0');
  EXPECT_EQ(Error(Raw().Header(0, 1).Str("a").U32(9).U32(0).U64(kLimit).Bytes(many).bytes()), "ok");
  EXPECT_THAT(Error(Raw()
                        .Header(0, 2)
                        .Str("a")
                        .U32(9)
                        .U32(0)
                        .U64(kLimit)
                        .Bytes(many)
                        .Str("b")
                        .U32(9)
                        .U32(7)
                        .U64(1)
                        .U8(1)
                        .bytes()),
              HasSubstr("metadata key #1 ('b'): array count 1 exceeds the limit of 8388608"));
  EXPECT_THAT(Error(Raw().Header(0, 1).Str("a").U32(9).U32(13).U64(0).bytes()),
              HasSubstr("unknown array element type 13"));
}

TEST(GgufMalformed, ValueTypesAndNesting) {
  EXPECT_THAT(Error(Raw().Header(0, 1).Str("k").U32(13).U32(0).bytes()),
              HasSubstr("metadata key #0 ('k'): unknown value type 13"));
  EXPECT_THAT(Error(Raw().Header(0, 1).Str("k").U32(0xffffffff).U32(0).bytes()),
              HasSubstr("unknown value type 4294967295"));
  // 16 levels of nesting are fine, 17 are not.
  for (int depth : {16, 17}) {
    Raw r;
    r.Header(0, 1).Str("deep").U32(9);
    for (int d = 1; d < depth; ++d) r.U32(9).U64(1);
    r.U32(0).U64(1).U8(42);
    if (depth == 16) {
      EXPECT_EQ(Error(r.bytes()), "ok");
    } else {
      EXPECT_THAT(Error(r.bytes()), HasSubstr("arrays nested deeper than 16 levels"));
    }
  }
  EXPECT_THAT(Error(Raw().Header(0, 2).Str("k").U32(4).U32(1).Str("k").U32(8).Str("v").bytes()),
              HasSubstr("duplicate metadata key 'k' (keys #0 and #1)"));
  EXPECT_THAT(Error(Raw().Header(0, 1).Str("k").U32(4).U8(1).bytes()),
              HasSubstr("truncated GGUF: metadata key #0 ('k'): uint32 needs 4 bytes at offset 37, "
                        "only 1 remain"));
}

TEST(GgufMalformed, Alignment) {
  auto with_alignment = [](uint32_t type, std::string_view value) {
    Raw r;
    r.Header(1, 1).Str("general.alignment").U32(type).Bytes(value);
    r.Tensor("x", {8}, 0, 0).Pad(64).Bytes(std::string(64, '\0'));
    return r.bytes();
  };
  auto u32 = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [](uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); };
  EXPECT_EQ(Error(with_alignment(4, u32(64))), "ok");
  EXPECT_EQ(Error(with_alignment(4, u32(1))), "ok");
  EXPECT_EQ(Error(with_alignment(10, u64(16))), "ok");  // any integer type that fits
  EXPECT_THAT(Error(with_alignment(4, u32(0))),
              HasSubstr("general.alignment 0 is not a non-zero power of two"));
  EXPECT_THAT(Error(with_alignment(4, u32(48))), HasSubstr("general.alignment 48 is not"));
  EXPECT_THAT(Error(with_alignment(10, u64(uint64_t{1} << 33))),
              HasSubstr("general.alignment 8589934592 is not"));
  EXPECT_THAT(Error(with_alignment(5, u32(0xffffffc0))), HasSubstr("general.alignment -64 is not"));
  EXPECT_THAT(Error(with_alignment(8, Raw().Str("32").bytes())),
              HasSubstr("general.alignment has type string, expected uint32"));
  // A huge valid alignment puts the data section past the end of the file.
  EXPECT_THAT(Error(with_alignment(4, u32(uint32_t{1} << 31))),
              HasSubstr("data section would start at offset 2147483648"));
}

TEST(GgufMalformed, TensorShapes) {
  EXPECT_THAT(Error(OneTensorFile({1, 1, 1, 1, 8}, 0, 0)),
              HasSubstr("tensor info #0 ('x'): n_dims 5 exceeds the maximum of 4"));
  EXPECT_THAT(Error(Raw().Header(1, 0).Str("x").U32(~0u).Bytes(std::string(32, 0)).bytes()),
              HasSubstr("n_dims 4294967295 exceeds"));
  EXPECT_THAT(Error(OneTensorFile({kHuge63}, 0, 0)),
              HasSubstr("tensor info #0 ('x'): ne[0] = 9223372036854775808 does not fit int64"));
  EXPECT_THAT(Error(OneTensorFile({uint64_t{1} << 62, 4}, 0, 0)),
              HasSubstr("tensor 'x': shape {4611686018427387904, 4, 1, 1} of type F32 overflows"));
  EXPECT_THAT(Error(OneTensorFile({uint64_t{1} << 31, uint64_t{1} << 31, uint64_t{1} << 31}, 0, 0)),
              HasSubstr("overflows"));
  // Bytes overflow even though elements fit (F32 is 4 bytes per element).
  EXPECT_THAT(Error(OneTensorFile({uint64_t{1} << 62}, 0, 0)), HasSubstr("overflows"));
  // An intermediate product overflows even though a later dim is 0.
  EXPECT_THAT(Error(OneTensorFile({uint64_t{1} << 62, 4, 0}, 0, 0)), HasSubstr("overflows"));
  // Rows overflow although ne[0] = 0 makes the element count 0.
  EXPECT_THAT(Error(OneTensorFile({0, uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0)),
              HasSubstr("overflows"));
  EXPECT_THAT(Error(OneTensorFile({33, 2}, 3, 0)),
              HasSubstr("tensor 'x': ne[0] = 33 is not a multiple of the Q4_1 block size 32"));
  EXPECT_EQ(Error(OneTensorFile({0, 7}, 0, 0)), "ok");  // empty tensors are allowed
  EXPECT_EQ(Error(OneTensorFile({}, 0, 0)), "ok");      // so is a scalar (n_dims 0)
}

TEST(GgufMalformed, TensorTypes) {
  EXPECT_THAT(Error(OneTensorFile({8}, 1234, 0)),
              HasSubstr("unknown tensor type 1234 for tensor 'x'"));
  EXPECT_THAT(Error(OneTensorFile({8}, 4, 0)), HasSubstr("unknown tensor type 4 for tensor 'x'"));
  absl::StatusOr<std::unique_ptr<GgufFile>> f =
      GgufFile::FromBuffer(OneTensorFile({256}, 10, 0, 96));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(f.status().message()),
              HasSubstr("tensor 'x' has type Q2_K (10), which Loom does not support"));
}

TEST(GgufMalformed, TensorOffsets) {
  EXPECT_THAT(Error(OneTensorFile({8}, 0, 1024)),
              HasSubstr("truncated GGUF: tensor 'x': 32 bytes at data offset 1024 run past the end "
                        "of the data section (32 bytes"));
  EXPECT_THAT(Error(OneTensorFile({8}, 0, 0, 31)), HasSubstr("32 bytes at data offset 0 run past"));
  EXPECT_THAT(Error(OneTensorFile({8}, 0, ~uint64_t{0} - 31)), HasSubstr("run past the end"));
  EXPECT_THAT(Error(OneTensorFile({8}, 0, 4, 64)),
              HasSubstr("tensor 'x': data offset 4 is not a multiple of the alignment 32"));
  // Tensor infos present but the data section (even its padding) is missing.
  EXPECT_THAT(Error(Raw().Header(1, 0).Tensor("x", {8}, 0, 0).bytes()),
              HasSubstr("truncated GGUF: data section would start at offset 64"));

  Raw overlap;
  overlap.Header(2, 0).Tensor("a", {16}, 0, 0).Tensor("b", {8}, 0, 32).Pad(32);
  overlap.Bytes(std::string(64, '\0'));
  EXPECT_THAT(Error(overlap.bytes()),
              HasSubstr("tensors 'a' (data offset 0, 64 bytes) and 'b' (data offset 32) overlap"));
  Raw same;
  same.Header(2, 0).Tensor("a", {8}, 0, 32).Tensor("b", {8}, 0, 32).Pad(32);
  same.Bytes(std::string(64, '\0'));
  EXPECT_THAT(Error(same.bytes()), HasSubstr("overlap"));
  Raw reversed;  // out of order but disjoint is fine
  reversed.Header(2, 0).Tensor("a", {8}, 0, 32).Tensor("b", {8}, 0, 0).Pad(32);
  reversed.Bytes(std::string(64, '\0'));
  EXPECT_EQ(Error(reversed.bytes()), "ok");

  Raw dup;
  dup.Header(2, 0).Tensor("a", {8}, 0, 0).Tensor("a", {8}, 0, 32).Pad(32);
  dup.Bytes(std::string(64, '\0'));
  EXPECT_THAT(Error(dup.bytes()), HasSubstr("duplicate tensor name 'a' (tensor infos #0 and #1)"));
}

}  // namespace
}  // namespace loom::gguf
