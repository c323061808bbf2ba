// Round trips through GgufWriter and GgufFile: every value type, nested arrays, tensors of each
// supported type, alignment, the typed getters, and the writer's own validation.
#include "engine/gguf/gguf.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/gguf/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::gguf {
namespace {

using kernels::DType;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Deterministic filler bytes, different per tensor.
std::string Pattern(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7);
  return s;
}

struct ExpectedTensor {
  std::string name;
  DType type;
  std::vector<int64_t> dims;
  size_t bytes;
};

const std::vector<ExpectedTensor>& Tensors() {
  static const auto* t = new std::vector<ExpectedTensor>{
      {"f32", DType::kF32, {4, 3}, 4 * 3 * 4},     {"f16", DType::kF16, {8}, 16},
      {"bf16", DType::kBF16, {2, 2, 2}, 16},       {"q4_0", DType::kQ4_0, {32, 2}, 2 * 18},
      {"q4_1", DType::kQ4_1, {64, 2}, 2 * 2 * 20}, {"q8_0", DType::kQ8_0, {32, 1, 1, 2}, 2 * 34},
      {"q4_k", DType::kQ4_K, {256}, 144},          {"q6_k", DType::kQ6_K, {512, 1}, 2 * 210},
      {"empty", DType::kF32, {0, 5}, 0},
  };
  return *t;
}

GgufWriter FullWriter(uint32_t alignment) {
  GgufWriter w;
  w.AddUint8("u8", 255);
  w.AddInt8("i8", -128);
  w.AddUint16("u16", 65535);
  w.AddInt16("i16", -32768);
  w.AddUint32("u32", 4000000000u);
  w.AddInt32("i32", -2000000000);
  w.AddUint64("u64", std::numeric_limits<uint64_t>::max());
  w.AddInt64("i64", std::numeric_limits<int64_t>::min());
  w.AddFloat32("f32", 1.5f);
  w.AddFloat64("f64", M_PI);
  w.AddBool("yes", true);
  w.AddBool("no", false);
  w.AddString("str", std::string("h\xc3\xa9llo\0world", 12));
  w.AddString("empty_str", "");
  w.AddStringArray("str_arr", {"a", "", "<|im_start|>"});
  w.AddInt32Array("i32_arr", {1, -2, 3});
  w.AddUint32Array("u32_arr", {7, 4000000000u});
  w.AddFloat32Array("f32_arr", {0.25f, -1.0f});
  w.AddArray("empty_arr", ValueType::kUint8, {});
  w.AddArray("nested", ValueType::kArray,
             {MakeArray(ValueType::kInt16, {MakeInt(ValueType::kInt16, -5)}),
              MakeArray(ValueType::kString, {MakeString("x"), MakeString("yz")}),
              MakeArray(ValueType::kArray, {MakeArray(ValueType::kBool, {MakeBool(true)})})});
  w.SetAlignment(alignment);
  uint8_t seed = 1;
  for (const ExpectedTensor& t : Tensors())
    w.AddTensor(t.name, t.type, t.dims, Pattern(t.bytes, seed++));
  return w;
}

void CheckFull(const GgufFile& f, uint32_t alignment) {
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  ASSERT_EQ(f.metadata().size(), 21u);
  EXPECT_EQ(f.metadata()[0].first, "u8");
  EXPECT_EQ(f.metadata()[20].first, "general.alignment");

  EXPECT_EQ(f.Find("u8")->type, ValueType::kUint8);
  EXPECT_EQ(f.Find("u8")->i, 255);
  EXPECT_EQ(f.Find("i8")->i, -128);
  EXPECT_EQ(f.Find("u16")->i, 65535);
  EXPECT_EQ(f.Find("i16")->i, -32768);
  EXPECT_EQ(f.Find("u32")->u, 4000000000u);
  EXPECT_EQ(f.Find("i32")->i, -2000000000);
  EXPECT_EQ(f.Find("u64")->type, ValueType::kUint64);
  EXPECT_EQ(f.Find("u64")->u, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.Find("i64")->i, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.Find("f32")->f, 1.5);
  EXPECT_EQ(f.Find("f64")->f, M_PI);
  EXPECT_TRUE(f.Find("yes")->b);
  EXPECT_FALSE(f.Find("no")->b);
  EXPECT_EQ(f.Find("str")->s, std::string("h\xc3\xa9llo\0world", 12));
  EXPECT_EQ(f.Find("empty_str")->s, "");
  EXPECT_EQ(f.Find("missing"), nullptr);

  EXPECT_EQ(*f.GetUint32("u8"), 255u);
  EXPECT_EQ(*f.GetUint32("u32"), 4000000000u);
  EXPECT_EQ(*f.GetInt64("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(*f.GetInt64("u16"), 65535);
  EXPECT_EQ(*f.GetFloat32("f32"), 1.5f);
  EXPECT_FLOAT_EQ(*f.GetFloat32("f64"), static_cast<float>(M_PI));
  EXPECT_TRUE(*f.GetBool("yes"));
  EXPECT_EQ(*f.GetString("str"), std::string("h\xc3\xa9llo\0world", 12));
  EXPECT_THAT(*f.GetStringArray("str_arr"), ElementsAre("a", "", "<|im_start|>"));
  EXPECT_THAT(*f.GetInt32Array("i32_arr"), ElementsAre(1, -2, 3));
  EXPECT_THAT(*f.GetFloat32Array("f32_arr"), ElementsAre(0.25f, -1.0f));
  EXPECT_TRUE(f.GetStringArray("empty_arr").status().code() == absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(f.GetInt32Array("empty_arr")->empty());

  const Value* u32_arr = f.Find("u32_arr");
  ASSERT_NE(u32_arr, nullptr);
  EXPECT_EQ(u32_arr->array_type, ValueType::kUint32);
  ASSERT_EQ(u32_arr->array.size(), 2u);
  EXPECT_EQ(u32_arr->array[1].u, 4000000000u);

  const Value* nested = f.Find("nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->type, ValueType::kArray);
  EXPECT_EQ(nested->array_type, ValueType::kArray);
  ASSERT_EQ(nested->array.size(), 3u);
  EXPECT_EQ(nested->array[0].array_type, ValueType::kInt16);
  ASSERT_EQ(nested->array[0].array.size(), 1u);
  EXPECT_EQ(nested->array[0].array[0].i, -5);
  ASSERT_EQ(nested->array[1].array.size(), 2u);
  EXPECT_EQ(nested->array[1].array[1].s, "yz");
  ASSERT_EQ(nested->array[2].array.size(), 1u);
  ASSERT_EQ(nested->array[2].array[0].array.size(), 1u);
  EXPECT_TRUE(nested->array[2].array[0].array[0].b);

  ASSERT_EQ(f.tensors().size(), Tensors().size());
  const uint8_t* data_start = f.tensors()[0].data - f.tensors()[0].offset;
  uint8_t seed = 1;
  for (size_t k = 0; k < Tensors().size(); ++k) {
    const ExpectedTensor& e = Tensors()[k];
    SCOPED_TRACE(e.name);
    const TensorInfo* t = f.FindTensor(e.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t, &f.tensors()[k]);
    EXPECT_EQ(t->type, e.type);
    EXPECT_EQ(t->n_dims, static_cast<int>(e.dims.size()));
    int64_t n = 1;
    for (int d = 0; d < 4; ++d) {
      const int64_t want = d < static_cast<int>(e.dims.size()) ? e.dims[d] : 1;
      EXPECT_EQ(t->ne[d], want);
      n *= want;
    }
    EXPECT_EQ(t->NumElements(), n);
    EXPECT_EQ(t->size_bytes, e.bytes);
    EXPECT_EQ(t->offset % alignment, 0u);
    EXPECT_EQ(t->data, data_start + t->offset);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(t->data), t->size_bytes),
              Pattern(e.bytes, seed++));
  }
  EXPECT_EQ(f.FindTensor("nope"), nullptr);
  EXPECT_EQ(f.GetTensor("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.GetTensor("nope").status().message()), HasSubstr("'nope'"));
  EXPECT_EQ(*f.GetTensor("q4_1"), f.FindTensor("q4_1"));
  EXPECT_EQ(f.FindTensor("q4_1")->RowBytes(), 40u);
}

TEST(GgufRoundTrip, FromBufferEveryValueTypeAndTensor) {
  for (uint32_t alignment : {1u, 8u, 32u, 64u, 4096u}) {
    SCOPED_TRACE(alignment);
    absl::StatusOr<std::string> bytes = FullWriter(alignment).Serialize();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(*bytes);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->file_size(), bytes->size());
    CheckFull(**f, alignment);
  }
}

TEST(GgufRoundTrip, OpenMapsTheFile) {
  const std::string path = testing::TempDir() + "/gguf_roundtrip.gguf";
  ASSERT_TRUE(FullWriter(64).WriteFile(path).ok());
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  CheckFull(**f, 64);
  // A mapping is page-aligned, so tensor data is aligned in memory too.
  for (const TensorInfo& t : (*f)->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << t.name;
  }
  std::remove(path.c_str());
}

TEST(GgufRoundTrip, DefaultAlignmentAndNoTensors) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 32u);
  EXPECT_TRUE((*f)->tensors().empty());
  // Without tensors, the padding before the (empty) data section may be missing.
  bytes->resize(4 + 4 + 8 + 8 + 8 + 20 + 4 + 8 + 5);
  f = GgufFile::FromBuffer(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
}

TEST(GgufRoundTrip, TensorsWithoutMetadata) {
  GgufWriter w;
  w.AddTensorF32("x", {2}, std::vector<float>{1.0f, 2.0f});
  std::vector<uint8_t> q8(34, 0);
  q8[33] = 9;
  w.AddTensor("q8", DType::kQ8_0, {32}, q8);
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->metadata().empty());
  ASSERT_EQ((*f)->tensors().size(), 2u);
  EXPECT_EQ((*f)->FindTensor("q8")->data[33], 9);
  const float* x = reinterpret_cast<const float*>((*f)->FindTensor("x")->data);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], 2.0f);
}

TEST(GgufGetters, IntegerWideningAndRange) {
  GgufWriter w;
  w.AddUint8("u8", 7);
  w.AddInt8("neg", -1);
  w.AddUint64("big", uint64_t{1} << 40);
  w.AddUint64("huge", std::numeric_limits<uint64_t>::max());
  w.AddInt64("i64_small", 12);
  w.AddString("s", "x");
  w.AddFloat32("f", 2.0f);
  w.AddBool("b", true);
  w.AddArray("u8_arr", ValueType::kUint8, {MakeInt(ValueType::kUint8, 200)});
  w.AddArray("i64_arr", ValueType::kInt64, {MakeInt(ValueType::kInt64, int64_t{1} << 40)});
  w.AddArray("f64_arr", ValueType::kFloat64, {MakeFloat(ValueType::kFloat64, 0.5)});
  w.AddInt32Array("i32_arr", {1});
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<std::unique_ptr<GgufFile>> fo = GgufFile::FromBuffer(*bytes);
  ASSERT_TRUE(fo.ok()) << fo.status();
  const GgufFile& f = **fo;

  EXPECT_EQ(*f.GetUint32("u8"), 7u);
  EXPECT_EQ(*f.GetInt64("u8"), 7);
  EXPECT_EQ(*f.GetInt64("neg"), -1);
  EXPECT_EQ(*f.GetUint32("i64_small"), 12u);
  EXPECT_EQ(*f.GetInt64("big"), int64_t{1} << 40);

  auto code = [](const auto& s) { return s.status().code(); };
  auto msg = [](const auto& s) { return std::string(s.status().message()); };
  EXPECT_EQ(code(f.GetUint32("neg")), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(msg(f.GetUint32("neg")), HasSubstr("'neg' value -1 does not fit uint32"));
  EXPECT_EQ(code(f.GetUint32("big")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(f.GetInt64("huge")), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(msg(f.GetInt64("huge")), HasSubstr("18446744073709551615 does not fit int64"));
  EXPECT_EQ(code(f.GetUint32("s")), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(msg(f.GetUint32("s")), HasSubstr("'s' has type string, expected an integer"));
  EXPECT_EQ(code(f.GetUint32("f")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(f.GetUint32("b")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(f.GetFloat32("u8")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(f.GetBool("u8")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(f.GetString("u8")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(f.GetUint32("missing")), absl::StatusCode::kNotFound);
  EXPECT_THAT(msg(f.GetString("missing")), HasSubstr("'missing' not found"));
  EXPECT_EQ(code(f.GetStringArray("missing")), absl::StatusCode::kNotFound);

  EXPECT_THAT(*f.GetInt32Array("u8_arr"), ElementsAre(200));
  EXPECT_THAT(*f.GetInt32Array("i32_arr"), ElementsAre(1));
  EXPECT_EQ(code(f.GetInt32Array("i64_arr")), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(msg(f.GetInt32Array("i64_arr")), HasSubstr("'i64_arr[0]' value 1099511627776"));
  EXPECT_THAT(*f.GetFloat32Array("f64_arr"), ElementsAre(0.5f));
  EXPECT_EQ(code(f.GetFloat32Array("i32_arr")), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(msg(f.GetStringArray("i32_arr")),
              HasSubstr("has type array of int32, expected array of string"));
  EXPECT_EQ(code(f.GetInt32Array("s")), absl::StatusCode::kInvalidArgument);
}

TEST(GgufWriter, RejectsInvalidInput) {
  auto serialize_error = [](const GgufWriter& w) {
    absl::StatusOr<std::string> s = w.Serialize();
    return s.ok() ? std::string("ok") : std::string(s.status().message());
  };
  {
    GgufWriter w;
    w.AddTensor("t", DType::kQ4_1, {64}, std::string(39, '\0'));
    EXPECT_THAT(serialize_error(w),
                HasSubstr("tensor 't': got 39 bytes, expected 40 for Q4_1 {64}"));
  }
  {
    GgufWriter w;
    w.AddTensor("t", DType::kQ4_1, {48}, std::string(40, '\0'));
    EXPECT_THAT(serialize_error(w), HasSubstr("not a multiple of the Q4_1 block size 32"));
  }
  {
    GgufWriter w;
    w.AddTensor("t", DType::kF32, {1, 1, 1, 1, 1}, std::string(4, '\0'));
    EXPECT_THAT(serialize_error(w), HasSubstr("5 dims"));
  }
  {
    GgufWriter w;
    w.AddTensorF32("t", {1}, std::vector<float>{1});
    w.AddTensorF32("t", {1}, std::vector<float>{1});
    EXPECT_THAT(serialize_error(w), HasSubstr("duplicate tensor name 't'"));
  }
  {
    GgufWriter w;
    w.AddUint32("k", 1);
    w.AddString("k", "x");
    EXPECT_THAT(serialize_error(w), HasSubstr("duplicate metadata key 'k'"));
  }
  {
    GgufWriter w;
    w.AddArray("a", ValueType::kInt32, {MakeString("x")});
    EXPECT_THAT(serialize_error(w), HasSubstr("element 0 has type string in an array of int32"));
  }
  {
    GgufWriter w;
    w.AddValue("v", MakeInt(ValueType::kUint8, 256));
    EXPECT_THAT(serialize_error(w), HasSubstr("value 256 does not fit uint8"));
  }
  for (uint32_t bad : {0u, 3u, 48u}) {
    GgufWriter w;
    w.SetAlignment(bad);
    EXPECT_THAT(serialize_error(w), HasSubstr("non-zero power of two"));
  }
  {
    GgufWriter w;
    w.SetAlignment(16);
    w.SetAlignment(64);  // replaces, does not duplicate
    absl::StatusOr<std::string> s = w.Serialize();
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ((*GgufFile::FromBuffer(*s))->alignment(), 64u);
  }
  GgufWriter w;
  EXPECT_FALSE(w.WriteFile("/nonexistent-dir/x.gguf").ok());
}

TEST(GgufWriter, UnsupportedTypesCanBeWrittenButAreRejectedOnRead) {
  GgufWriter w;
  w.AddTensor("blk.0.ffn_down.weight", DType::kQ5_0, {32}, std::string(22, '\0'));
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(*bytes);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(f.status().message()),
              HasSubstr("tensor 'blk.0.ffn_down.weight' has type Q5_0 (6), which Loom does not "
                        "support"));
}

TEST(GgufOpen, MissingPathDirectoryAndEmptyFile) {
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("/nonexistent/model.gguf"));

  f = GgufFile::Open(testing::TempDir());
  EXPECT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("not a regular file"));

  const std::string path = testing::TempDir() + "/gguf_empty.gguf";
  std::FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  std::fclose(fp);
  f = GgufFile::Open(path);
  EXPECT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(path + ": truncated GGUF: file is 0"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace loom::gguf
