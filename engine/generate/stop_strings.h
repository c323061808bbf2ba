// Stop-string matching over streamed text: finds a stop string as soon as it completes and tells
// how much text is safe to release (text that might still become the start of a stop string is
// held).
//
//   size_t at = loom::engine::FindStop(text, stops, /*from=*/released);
//   if (at == std::string::npos) release_up_to = text.size() - loom::engine::HeldBack(text, stops);
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace loom::engine {

// Earliest position at or after `from` where a complete stop string starts; npos if none.
size_t FindStop(const std::string& text, const std::vector<std::string>& stops, size_t from);
// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t HeldBack(const std::string& text, const std::vector<std::string>& stops);

}  // namespace loom::engine
