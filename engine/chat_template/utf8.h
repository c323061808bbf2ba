// UTF-8 and Python str helpers for the chat template engine: Python strings index, slice, strip
// and case-map by code point, so the engine does too.
//
//   std::u32string cps = DecodeUtf8("héllo");  // 5 code points
//   EncodeUtf8(cps.substr(1, 1));              // "é"
//   PythonStrip("\u00a0 hi\n");                // "hi" (Python's str.strip())
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace loom::chat {

// Invalid bytes decode to U+DC80..U+DCFF (Python's surrogateescape) and encode back unchanged.
std::u32string DecodeUtf8(std::string_view s);
std::string EncodeUtf8(std::u32string_view cps);
void AppendUtf8(char32_t cp, std::string* out);
size_t CountCodePoints(std::string_view s);

// Python's str.isspace() for one code point.
bool IsPythonSpace(char32_t cp);
// Python's str.isalpha()/isdigit() approximations: ASCII plus every non-ASCII letter-like point.
bool IsCasedLetter(char32_t cp);
// Python's regex \w approximated: ASCII letters, digits, '_', and non-ASCII code points outside
// the punctuation, symbol and emoji blocks.
bool IsWordChar(char32_t cp);
char32_t ToUpper(char32_t cp);  // ASCII, Latin-1, Greek and Cyrillic
char32_t ToLower(char32_t cp);

std::string PythonUpper(std::string_view s);
std::string PythonLower(std::string_view s);
// str.strip()/lstrip()/rstrip(): with `chars` == nullptr strips Python whitespace.
std::string PythonStrip(std::string_view s, const std::string* chars = nullptr, bool left = true,
                        bool right = true);
// str.capitalize(): first code point upper-cased, the rest lower-cased.
std::string PythonCapitalize(std::string_view s);
// str.title(): a letter after a non-letter is upper-cased, other letters lower-cased.
std::string PythonTitle(std::string_view s);
// str.replace(old, new, count); count < 0 replaces all.
std::string PythonReplace(const std::string& s, const std::string& old, const std::string& with,
                          int64_t count);

}  // namespace loom::chat
