#include "engine/kv_cache/kv_block_manager.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_format.h"

namespace loom::kv {

absl::Status KvCacheConfig::Validate() const {
  if (block_size < 1 || block_size > kMaxBlockSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kv cache block_size must be in [1, %d], got %d", kMaxBlockSize, block_size));
  }
  if (num_blocks < 1 || num_blocks > kMaxNumBlocks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kv cache num_blocks must be in [1, %d], got %d", kMaxNumBlocks, num_blocks));
  }
  return absl::OkStatus();
}

int64_t KvBytesPerToken(int n_layers, int kv_dim, int bytes_per_element) {
  return int64_t{2} * n_layers * kv_dim * bytes_per_element;
}

absl::StatusOr<int64_t> NumBlocksForBudget(int64_t budget_bytes, int64_t kv_bytes_per_token,
                                           int block_size) {
  if (budget_bytes <= 0 || kv_bytes_per_token <= 0 || block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kv cache budget %d bytes, %d bytes per token and block size %d must all be positive",
        budget_bytes, kv_bytes_per_token, block_size));
  }
  const int64_t tokens = budget_bytes / kv_bytes_per_token;
  const int64_t blocks = tokens / block_size;
  if (blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("kv cache budget of %d bytes is below one block (%d tokens of %d bytes)",
                        budget_bytes, block_size, kv_bytes_per_token));
  }
  return blocks;
}

absl::StatusOr<std::unique_ptr<KvBlockManager>> KvBlockManager::Create(
    const KvCacheConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::make_unique<KvBlockManager>(config);
}

KvBlockManager::KvBlockManager(const KvCacheConfig& config, BlockHashFn hash)
    : config_(config), pool_(config.num_blocks, config.block_size, hash) {}

double KvBlockManager::Usage() const {
  return static_cast<double>(num_blocks() - num_free_blocks()) / static_cast<double>(num_blocks());
}

int64_t KvBlockManager::BlocksForTokens(int64_t n_tokens) const {
  return n_tokens <= 0 ? 0 : (n_tokens + block_size() - 1) / block_size();
}

bool KvBlockManager::CanAllocate(int64_t n_tokens) const {
  return BlocksForTokens(n_tokens) <= num_free_blocks();
}

std::vector<CachedBlock> KvBlockManager::FindCachedPrefix(std::span<const int32_t> tokens) const {
  std::vector<CachedBlock> hits;
  if (!config_.enable_prefix_caching || tokens.empty()) return hits;
  const int bs = block_size();
  // Blocks lying wholly within the first size-1 tokens: the last token is always recomputed so
  // that the step that finishes the prompt has its logits.
  const size_t max_hits = (tokens.size() - 1) / bs;
  CachedBlock parent;
  for (size_t i = 0; i < max_hits; ++i) {
    CachedBlock hit = pool_.Find(parent, tokens.subspan(i * bs, bs));
    if (hit.id == kNoBlock) break;
    hits.push_back(hit);
    parent = hit;
  }
  while (hit_filter_ && !hits.empty() &&
         !hit_filter_(hits.back(), static_cast<int>(hits.size()) * bs)) {
    hits.pop_back();
  }
  return hits;
}

IndexedPrefix KvBlockManager::Indexed(SeqId seq_id) const {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end() || it->second.num_indexed == 0) return {};
  return {it->second.last, it->second.num_indexed * block_size()};
}

int64_t KvBlockManager::FreeBlocksNeeded(std::span<const int32_t> tokens) const {
  const std::vector<CachedBlock> hits = FindCachedPrefix(tokens);
  int64_t needed =
      BlocksForTokens(static_cast<int64_t>(tokens.size())) - static_cast<int64_t>(hits.size());
  for (const CachedBlock& h : hits) needed += pool_.ref_count(h.id) == 0 ? 1 : 0;
  return needed;
}

absl::StatusOr<int> KvBlockManager::Allocate(SeqId seq_id, std::span<const int32_t> tokens) {
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("sequence %d has no tokens", seq_id));
  }
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sequence %d has %d tokens, too many", seq_id, tokens.size()));
  }
  if (seqs_.contains(seq_id)) {
    return absl::AlreadyExistsError(absl::StrFormat("sequence %d already has blocks", seq_id));
  }
  const std::vector<CachedBlock> hits = FindCachedPrefix(tokens);
  const int64_t total = BlocksForTokens(static_cast<int64_t>(tokens.size()));
  int64_t needed = total - static_cast<int64_t>(hits.size());
  for (const CachedBlock& h : hits) needed += pool_.ref_count(h.id) == 0 ? 1 : 0;
  if (needed > num_free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "sequence %d needs %d free kv blocks, %d are free", seq_id, needed, num_free_blocks()));
  }
  Seq seq;
  seq.blocks.reserve(total);
  // Reference the hits first so that taking new blocks cannot evict them.
  for (const CachedBlock& h : hits) {
    pool_.Ref(h.id);
    seq.blocks.push_back(h.id);
  }
  while (static_cast<int64_t>(seq.blocks.size()) < total) seq.blocks.push_back(pool_.Allocate());
  seq.tokens.assign(tokens.begin(), tokens.end());
  const int cached = static_cast<int>(hits.size()) * block_size();
  seq.num_computed = cached;
  seq.num_indexed = static_cast<int>(hits.size());
  if (!hits.empty()) seq.last = hits.back();
  seqs_.emplace(seq_id, std::move(seq));
  if (config_.enable_prefix_caching) {
    stats_.queries += static_cast<int64_t>(tokens.size());
    stats_.hits += cached;
  }
  return cached;
}

absl::Status KvBlockManager::AppendSlot(SeqId seq_id, int32_t token) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrFormat("sequence %d has no blocks", seq_id));
  }
  Seq& seq = it->second;
  if (seq.tokens.size() == seq.blocks.size() * static_cast<size_t>(block_size())) {
    const BlockId b = pool_.Allocate();
    if (b == kNoBlock) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("no free kv block for sequence %d", seq_id));
    }
    seq.blocks.push_back(b);
  }
  seq.tokens.push_back(token);
  return absl::OkStatus();
}

absl::Status KvBlockManager::MarkComputed(SeqId seq_id, int num_tokens) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrFormat("sequence %d has no blocks", seq_id));
  }
  Seq& seq = it->second;
  if (num_tokens < seq.num_computed || num_tokens > static_cast<int>(seq.tokens.size())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sequence %d: %d computed tokens, must be in [%d, %d]", seq_id, num_tokens,
                        seq.num_computed, seq.tokens.size()));
  }
  seq.num_computed = num_tokens;
  if (!config_.enable_prefix_caching) return absl::OkStatus();
  const int bs = block_size();
  const std::span<const int32_t> tokens(seq.tokens);
  while (!seq.chain_broken && (seq.num_indexed + 1) * bs <= num_tokens) {
    const CachedBlock c = pool_.Insert(seq.blocks[seq.num_indexed], seq.last,
                                       tokens.subspan(seq.num_indexed * bs, bs));
    if (c.id == kNoBlock) {
      // The prefix cannot be indexed past here; the sequence itself is unaffected.
      seq.chain_broken = true;
      break;
    }
    seq.last = c;
    ++seq.num_indexed;
  }
  return absl::OkStatus();
}

absl::Status KvBlockManager::Free(SeqId seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrFormat("sequence %d has no blocks", seq_id));
  }
  // Last block first, so that a prefix's tail is evicted before its head.
  const std::vector<BlockId>& blocks = it->second.blocks;
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) pool_.Unref(*b);
  seqs_.erase(it);
  return absl::OkStatus();
}

int KvBlockManager::NumTokens(SeqId seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? 0 : static_cast<int>(it->second.tokens.size());
}

std::span<const BlockId> KvBlockManager::BlockTable(SeqId seq_id) const {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return {};
  return it->second.blocks;
}

absl::Status KvBlockManager::CheckConsistency() const {
  if (absl::Status s = pool_.CheckConsistency(); !s.ok()) return s;
  std::vector<int> refs(num_blocks(), 0);
  for (const auto& [id, seq] : seqs_) {
    if (static_cast<int64_t>(seq.blocks.size()) !=
        BlocksForTokens(static_cast<int64_t>(seq.tokens.size()))) {
      return absl::InternalError(absl::StrFormat("sequence %d: %d blocks for %d tokens", id,
                                                 seq.blocks.size(), seq.tokens.size()));
    }
    if (seq.num_computed > static_cast<int>(seq.tokens.size()) ||
        seq.num_indexed * block_size() > seq.num_computed) {
      return absl::InternalError(absl::StrFormat("sequence %d: bad progress", id));
    }
    std::vector<BlockId> sorted = seq.blocks;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return absl::InternalError(absl::StrFormat("sequence %d holds a block twice", id));
    }
    for (BlockId b : seq.blocks) {
      if (b < 0 || b >= num_blocks()) {
        return absl::InternalError(absl::StrFormat("sequence %d holds block %d", id, b));
      }
      ++refs[b];
    }
  }
  for (int64_t b = 0; b < num_blocks(); ++b) {
    if (pool_.ref_count(static_cast<BlockId>(b)) != refs[b]) {
      return absl::InternalError(absl::StrFormat("block %d has ref count %d but %d tables hold it",
                                                 b, pool_.ref_count(static_cast<BlockId>(b)),
                                                 refs[b]));
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::kv
