// Matcher: one sequence's parse state; masks come from the grammar's MaskCache.
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_impl.h"

namespace loom::grammar {

struct Matcher::Impl {
  std::shared_ptr<const internal::GrammarImpl> grammar;
  std::shared_ptr<const internal::TokenIndexImpl> index;
  std::shared_ptr<internal::MaskCache> cache;
  internal::ParseState state;
  bool finished = false;  // an end-of-generation token was accepted
};

Matcher::Matcher(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const TokenIndex> index)
    : impl_(std::make_unique<Impl>()) {
  impl_->grammar = std::static_pointer_cast<const internal::GrammarImpl>(std::move(grammar));
  impl_->index = std::static_pointer_cast<const internal::TokenIndexImpl>(std::move(index));
  impl_->cache = impl_->grammar->CacheFor(impl_->index);
  impl_->state = impl_->grammar->initial();
}

Matcher::~Matcher() = default;
Matcher::Matcher(Matcher&&) noexcept = default;
Matcher& Matcher::operator=(Matcher&&) noexcept = default;

bool Matcher::CanEnd() const {
  const internal::ParseState& st = impl_->state;
  return impl_->finished ||
         (st.partial.remain == 0 && !st.stacks.empty() && st.stacks.front().empty());
}

bool Matcher::IsDone() const {
  const internal::ParseState& st = impl_->state;
  return impl_->finished || (st.stacks.size() == 1 && st.stacks.front().empty());
}

void Matcher::MaskLogits(std::span<float> logits) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const internal::TokenIndexImpl& index = *impl_->index;
  const size_t vocab = static_cast<size_t>(index.vocab_size());
  for (size_t i = vocab; i < logits.size(); ++i) logits[i] = kNegInf;  // rows past the vocab
  const size_t n = std::min(vocab, logits.size());
  std::shared_ptr<const internal::TokenMask> mask;
  if (!IsDone()) mask = impl_->cache->Mask(impl_->state);
  if (mask == nullptr || !mask->any) {
    // Done (or, with a vocabulary that cannot spell what the grammar needs, stuck): only
    // end-of-generation tokens, so the sequence ends. Without any, leave the logits alone.
    const std::vector<int32_t>& eog = index.eog_ids();
    if (eog.empty()) return;
    std::vector<float> keep(eog.size(), kNegInf);
    for (size_t i = 0; i < eog.size(); ++i) {
      if (static_cast<size_t>(eog[i]) < n) keep[i] = logits[eog[i]];
    }
    std::fill(logits.begin(), logits.begin() + n, kNegInf);
    for (size_t i = 0; i < eog.size(); ++i) {
      if (static_cast<size_t>(eog[i]) < n) logits[eog[i]] = keep[i];
    }
    return;
  }
  for (size_t w = 0; w * 64 < n; ++w) {
    uint64_t off = ~mask->bits[w];
    while (off != 0) {
      const size_t i = w * 64 + __builtin_ctzll(off);
      if (i >= n) break;
      logits[i] = kNegInf;
      off &= off - 1;
    }
  }
}

absl::Status Matcher::Accept(int32_t token) {
  const internal::TokenIndexImpl& index = *impl_->index;
  if (token < 0 || token >= index.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("token ", token, " is out of range"));
  }
  if (impl_->finished) {
    return absl::InvalidArgumentError("the grammar already ended with an end-of-generation token");
  }
  if (index.is_eog(token)) {
    if (!CanEnd()) {
      return absl::InvalidArgumentError(
          absl::StrCat("end-of-generation token ", token, " before the grammar is complete"));
    }
    impl_->finished = true;
    return absl::OkStatus();
  }
  if (!index.in_trie(token)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ", token, " is a special or empty token, never allowed by a grammar"));
  }
  internal::ParseState next;
  if (!internal::AdvanceState(impl_->grammar->ir(), impl_->state, index.bytes(token), &next)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("token %d (\"%s\") is not allowed by the grammar here", token,
                        absl::CHexEscape(index.bytes(token))));
  }
  impl_->state = std::move(next);
  return absl::OkStatus();
}

}  // namespace loom::grammar
