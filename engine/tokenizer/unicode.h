// UTF-8 helpers for the tokenizer, with llama.cpp's exact (lenient) semantics, and the GPT-2
// byte-level mapping between raw bytes and printable codepoints.
//
//   std::vector<uint32_t> cpts = loom::tokenizer::DecodeUtf8Lenient("a\xff");  // {'a', 0xFFFD}
//   std::string s;
//   loom::tokenizer::AppendUtf8(0x20AC, &s);                                     // "€"
//   uint32_t g = loom::tokenizer::ByteToCodepoint(' ');                          // 0x120 'Ġ'
//   size_t n = loom::tokenizer::CompleteUtf8Prefix("ok\xe2\x82");                // 2
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loom::tokenizer {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Length of the UTF-8 sequence announced by lead byte `c`, as llama.cpp's unicode_len_utf8
// (continuation and invalid bytes count as 1).
inline size_t Utf8SequenceLength(uint8_t c) {
  static constexpr uint8_t kLookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLookup[c >> 4];
}

// Decodes like llama.cpp's unicode_cpts_from_utf8: every byte that does not start a well-formed
// (by llama.cpp's loose rules) sequence becomes one U+FFFD. Like llama.cpp it accepts overlong
// forms (C0 80 -> U+0000) and surrogates (ED A0 80 -> U+D800). Sequences that decode above
// U+10FFFF (F4 90.., F5..F7) make llama.cpp throw; here their lead byte counts as invalid.
std::vector<uint32_t> DecodeUtf8Lenient(std::string_view text);

// Appends the UTF-8 encoding of `cpt` (<= 0x10FFFF; surrogates are encoded as 3 bytes like
// llama.cpp does).
void AppendUtf8(uint32_t cpt, std::string* out);

// GPT-2 bytes_to_unicode(): the printable codepoint that stands for raw byte `b`.
uint32_t ByteToCodepoint(uint8_t b);
// Inverse of ByteToCodepoint; -1 for codepoints that stand for no byte.
int CodepointToByte(uint32_t cpt);

// Length of the longest prefix of `s` that does not end inside an incomplete (but so far valid)
// UTF-8 sequence. Bytes that can never become valid are not held back.
size_t CompleteUtf8Prefix(std::string_view s);

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or codepoints above U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace loom::tokenizer
