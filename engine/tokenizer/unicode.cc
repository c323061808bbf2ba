#include "engine/tokenizer/unicode.h"

#include <array>

namespace loom::tokenizer {
namespace {

inline bool IsContinuation(uint8_t c) { return (c & 0xC0) == 0x80; }

// Decodes one codepoint at `*offset` following llama.cpp's unicode_cpt_from_utf8; returns false
// (leaving `*offset` alone) where llama.cpp throws.
bool DecodeOne(std::string_view s, size_t* offset, uint32_t* cpt) {
  const size_t i = *offset;
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const uint8_t c = b(0);
  if (!(c & 0x80)) {
    *cpt = c;
    *offset = i + 1;
    return true;
  }
  if (!(c & 0x40)) return false;
  if (!(c & 0x20)) {
    if (i + 1 >= s.size() || !IsContinuation(b(1))) return false;
    *cpt = ((c & 0x1Fu) << 6) | (b(1) & 0x3Fu);
    *offset = i + 2;
    return true;
  }
  if (!(c & 0x10)) {
    if (i + 2 >= s.size() || !IsContinuation(b(1)) || !IsContinuation(b(2))) return false;
    *cpt = ((c & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
    *offset = i + 3;
    return true;
  }
  if (!(c & 0x08)) {
    if (i + 3 >= s.size() || !IsContinuation(b(1)) || !IsContinuation(b(2)) ||
        !IsContinuation(b(3))) {
      return false;
    }
    const uint32_t v =
        ((c & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) | (b(3) & 0x3Fu);
    if (v > 0x10FFFF) return false;  // llama.cpp throws later ("invalid codepoint") and aborts
    *cpt = v;
    *offset = i + 4;
    return true;
  }
  return false;
}

struct ByteTables {
  std::array<uint32_t, 256> byte_to_cpt{};
  std::array<int16_t, 324> cpt_to_byte{};  // codepoints 0..323 cover the whole mapping
};

const ByteTables& Tables() {
  static const ByteTables tables = [] {
    ByteTables t;
    t.cpt_to_byte.fill(-1);
    std::array<bool, 256> direct{};
    for (int c = 0x21; c <= 0x7E; ++c) direct[c] = true;
    for (int c = 0xA1; c <= 0xAC; ++c) direct[c] = true;
    for (int c = 0xAE; c <= 0xFF; ++c) direct[c] = true;
    int n = 0;
    for (int c = 0; c < 256; ++c) {
      const uint32_t cpt = direct[c] ? static_cast<uint32_t>(c) : static_cast<uint32_t>(256 + n++);
      t.byte_to_cpt[c] = cpt;
      t.cpt_to_byte[cpt] = static_cast<int16_t>(c);
    }
    return t;
  }();
  return tables;
}

}  // namespace

std::vector<uint32_t> DecodeUtf8Lenient(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  size_t offset = 0;
  while (offset < text.size()) {
    uint32_t cpt;
    if (DecodeOne(text, &offset, &cpt)) {
      out.push_back(cpt);
    } else {
      ++offset;
      out.push_back(kReplacementChar);
    }
  }
  return out;
}

void AppendUtf8(uint32_t cpt, std::string* out) {
  if (cpt <= 0x7F) {
    out->push_back(static_cast<char>(cpt));
  } else if (cpt <= 0x7FF) {
    out->push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out->push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | ((cpt >> 18) & 0x07)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

uint32_t ByteToCodepoint(uint8_t b) { return Tables().byte_to_cpt[b]; }

int CodepointToByte(uint32_t cpt) {
  const auto& t = Tables().cpt_to_byte;
  return cpt < t.size() ? t[cpt] : -1;
}

size_t CompleteUtf8Prefix(std::string_view s) {
  const size_t n = s.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    const auto c = static_cast<uint8_t>(s[n - k]);
    if (IsContinuation(c)) continue;
    size_t need = 1;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 4;
    }
    if (need <= k) return n;
    // Hold back only if what we have so far could still become a valid sequence.
    const std::string_view tail = s.substr(n - k);
    if (k >= 2) {
      const auto c1 = static_cast<uint8_t>(tail[1]);
      if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
          (c == 0xF4 && c1 > 0x8F)) {
        return n;
      }
    }
    return n - k;
  }
  return n;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + len > n) return false;
    const auto c1 = static_cast<uint8_t>(s[i + 1]);
    if (c1 < lo || c1 > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      if (!IsContinuation(static_cast<uint8_t>(s[i + k]))) return false;
    }
    i += len;
  }
  return true;
}

}  // namespace loom::tokenizer
