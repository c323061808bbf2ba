// libFuzzer target: parses arbitrary bytes with GgufFile::FromBuffer; when they parse, reads every
// metadata value, calls every getter on every key, checks the tensor table's invariants and touches
// every tensor byte, so that ASan/UBSan see any bad pointer or size the reader hands out.
// How to build and run: fuzz/CMakeLists.txt.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/gguf/gguf.h"

namespace {

using loom::gguf::GgufFile;
using loom::gguf::TensorInfo;
using loom::gguf::Value;
using loom::gguf::ValueType;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

uint64_t Walk(const Value& v, int depth) {
  Check(depth <= 16);
  uint64_t h = static_cast<uint64_t>(v.type) + v.u + static_cast<uint64_t>(v.i) + v.b + v.s.size();
  for (char c : v.s) h = h * 31 + static_cast<uint8_t>(c);
  if (v.type == ValueType::kArray) {
    for (const Value& e : v.array) {
      Check(e.type == v.array_type);
      h += Walk(e, depth + 1);
    }
  } else {
    Check(v.array.empty());
  }
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = GgufFile::FromBuffer(std::string(reinterpret_cast<const char*>(data), size));
  if (!f.ok()) {
    Check(!f.status().message().empty());
    return 0;
  }
  const GgufFile& g = **f;
  Check(g.version() == 3);
  Check(g.alignment() > 0 && std::has_single_bit(g.alignment()));
  Check(g.file_size() == size && g.data_offset() <= size);

  volatile uint64_t sink = 0;
  for (const auto& [key, value] : g.metadata()) {
    Check(g.Find(key) == &value);
    sink = sink + Walk(value, 0);
    sink = sink + g.GetUint32(key).ok() + g.GetInt64(key).ok() + g.GetFloat32(key).ok() +
           g.GetBool(key).ok() + g.GetString(key).ok();
    if (auto a = g.GetStringArray(key); a.ok()) sink = sink + a->size();
    if (auto a = g.GetInt32Array(key); a.ok()) sink = sink + a->size();
    if (auto a = g.GetFloat32Array(key); a.ok()) sink = sink + a->size();
  }

  for (const TensorInfo& t : g.tensors()) {
    Check(g.FindTensor(t.name) == &t);
    Check(t.n_dims >= 0 && t.n_dims <= 4);
    Check(loom::kernels::IsSupported(t.type));
    Check(t.offset % g.alignment() == 0);
    Check(g.data_offset() + t.offset + t.size_bytes <= size);
    Check(t.NumElements() >= 0);
    if (t.ne[1] * t.ne[2] * t.ne[3] > 0) {
      Check(t.RowBytes() * static_cast<size_t>(t.ne[1] * t.ne[2] * t.ne[3]) == t.size_bytes);
    }
    uint64_t sum = 0;
    for (size_t k = 0; k < t.size_bytes; ++k) sum += t.data[k];
    sink = sink + sum;
  }
  (void)sink;
  return 0;
}
