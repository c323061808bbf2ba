#include "engine/kv_cache/kv_block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

namespace loom::kv {
namespace {

uint64_t ConstantHash(uint64_t, std::span<const int32_t>) { return 7; }

std::vector<int32_t> Tokens(int32_t first, int n) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<BlockId> Table(const KvBlockManager& kv, SeqId id) {
  std::span<const BlockId> t = kv.BlockTable(id);
  return {t.begin(), t.end()};
}

KvCacheConfig Config(int block_size, int64_t num_blocks, bool prefix_caching = true) {
  KvCacheConfig c;
  c.block_size = block_size;
  c.num_blocks = num_blocks;
  c.enable_prefix_caching = prefix_caching;
  return c;
}

#define EXPECT_CONSISTENT(kv) EXPECT_TRUE((kv).CheckConsistency().ok()) << (kv).CheckConsistency()

TEST(KvCacheConfigTest, Validate) {
  EXPECT_TRUE(Config(16, 100).Validate().ok());
  EXPECT_TRUE(Config(1, 1).Validate().ok());
  EXPECT_EQ(Config(0, 100).Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Config(2048, 100).Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Config(16, 0).Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Config(16, KvCacheConfig::kMaxNumBlocks + 1).Validate().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(KvBlockManager::Create(KvCacheConfig{}).ok());  // num_blocks unset
  EXPECT_TRUE(KvBlockManager::Create(Config(16, 4)).ok());
}

TEST(KvCacheConfigTest, BlocksFromMemoryBudget) {
  // SmolLM2-360M: 32 layers, 5 KV heads x 64 = 320, fp16.
  const int64_t per_token = KvBytesPerToken(32, 320);
  EXPECT_EQ(per_token, 2 * 32 * 320 * 2);
  absl::StatusOr<int64_t> n = NumBlocksForBudget(int64_t{1} << 30, per_token, 16);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, ((int64_t{1} << 30) / per_token) / 16);
  EXPECT_EQ(*NumBlocksForBudget(16 * 100, 100, 16), 1);
  EXPECT_EQ(NumBlocksForBudget(16 * 100 - 1, 100, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(NumBlocksForBudget(0, 100, 16).ok());
  EXPECT_FALSE(NumBlocksForBudget(1000, 0, 16).ok());
  EXPECT_FALSE(NumBlocksForBudget(1000, 10, 0).ok());
}

TEST(KvBlockManagerTest, AllocateAppendFree) {
  KvBlockManager kv(Config(4, 8));
  EXPECT_TRUE(kv.CanAllocate(32));
  EXPECT_FALSE(kv.CanAllocate(33));
  absl::StatusOr<int> cached = kv.Allocate(1, Tokens(0, 6));
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_EQ(*cached, 0);
  EXPECT_EQ(kv.BlockTable(1).size(), 2u);
  EXPECT_EQ(kv.NumTokens(1), 6);
  EXPECT_DOUBLE_EQ(kv.Usage(), 2.0 / 8);

  ASSERT_TRUE(kv.AppendSlot(1, 6).ok());
  ASSERT_TRUE(kv.AppendSlot(1, 7).ok());
  EXPECT_EQ(kv.BlockTable(1).size(), 2u);  // 8 slots fit in 2 blocks
  ASSERT_TRUE(kv.AppendSlot(1, 8).ok());
  EXPECT_EQ(kv.BlockTable(1).size(), 3u);  // the 9th needs a new one
  EXPECT_EQ(kv.NumTokens(1), 9);
  EXPECT_CONSISTENT(kv);

  EXPECT_EQ(kv.Allocate(1, Tokens(0, 3)).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(kv.Allocate(2, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.AppendSlot(9, 0).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kv.Free(9).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(kv.BlockTable(9).empty());

  ASSERT_TRUE(kv.Free(1).ok());
  EXPECT_FALSE(kv.Contains(1));
  EXPECT_DOUBLE_EQ(kv.Usage(), 0.0);
  EXPECT_EQ(kv.num_free_blocks(), 8);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, OutOfBlocksChangesNothing) {
  KvBlockManager kv(Config(4, 3));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 8)).ok());
  EXPECT_EQ(kv.Allocate(2, Tokens(100, 5)).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(kv.Contains(2));
  ASSERT_TRUE(kv.Allocate(2, Tokens(100, 4)).ok());
  EXPECT_EQ(kv.num_free_blocks(), 0);
  EXPECT_EQ(kv.AppendSlot(1, 8).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(kv.NumTokens(1), 8);
  EXPECT_EQ(kv.BlockTable(1).size(), 2u);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, SharesComputedFullBlocksOfACommonPrefix) {
  KvBlockManager kv(Config(16, 16));
  const std::vector<int32_t> system = Tokens(1000, 32);
  const std::vector<int32_t> a = Concat(system, Tokens(0, 8));
  const std::vector<int32_t> b = Concat(system, Tokens(50, 20));
  ASSERT_EQ(*kv.Allocate(1, a), 0);
  ASSERT_TRUE(kv.MarkComputed(1, 40).ok());
  EXPECT_EQ(kv.allocator().num_cached(), 2);  // the two full blocks; not the partial third

  EXPECT_EQ(kv.FreeBlocksNeeded(b), 2);  // hits on blocks in use are free of charge
  absl::StatusOr<int> cached = kv.Allocate(2, b);
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_EQ(*cached, 32);
  const std::vector<BlockId> ta = Table(kv, 1);
  const std::vector<BlockId> tb = Table(kv, 2);
  ASSERT_EQ(tb.size(), 4u);
  EXPECT_EQ(tb[0], ta[0]);
  EXPECT_EQ(tb[1], ta[1]);
  EXPECT_NE(tb[2], ta[2]);
  EXPECT_EQ(kv.allocator().ref_count(ta[0]), 2);
  EXPECT_EQ(kv.num_free_blocks(), 16 - 3 - 2);
  EXPECT_EQ(kv.prefix_cache_stats().queries, 40 + 52);
  EXPECT_EQ(kv.prefix_cache_stats().hits, 32);
  EXPECT_CONSISTENT(kv);

  ASSERT_TRUE(kv.Free(1).ok());
  EXPECT_EQ(kv.allocator().ref_count(ta[0]), 1);
  ASSERT_TRUE(kv.Free(2).ok());
  EXPECT_EQ(kv.allocator().ref_count(ta[0]), 0);
  EXPECT_DOUBLE_EQ(kv.Usage(), 0.0);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, UncomputedBlocksAreNeverHit) {
  KvBlockManager kv(Config(4, 16));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 12)).ok());
  EXPECT_EQ(*kv.Allocate(2, Tokens(0, 12)), 0);  // 1's K/V is not written yet
  ASSERT_TRUE(kv.MarkComputed(1, 5).ok());       // one full block written
  EXPECT_EQ(*kv.Allocate(3, Tokens(0, 12)), 4);
  EXPECT_EQ(kv.MarkComputed(1, 4).code(), absl::StatusCode::kInvalidArgument);   // backwards
  EXPECT_EQ(kv.MarkComputed(1, 13).code(), absl::StatusCode::kInvalidArgument);  // past the end
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, HitLeavesTheLastTokenToCompute) {
  KvBlockManager kv(Config(4, 16));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 8)).ok());
  ASSERT_TRUE(kv.MarkComputed(1, 8).ok());
  EXPECT_EQ(*kv.Allocate(2, Tokens(0, 8)), 4);  // not 8: the last token must produce logits
  EXPECT_EQ(*kv.Allocate(3, Tokens(0, 9)), 8);
  EXPECT_EQ(*kv.Allocate(4, Tokens(0, 1)), 0);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, HitFilterCutsHitsBackToAnAcceptedPrefix) {
  KvBlockManager kv(Config(4, 16));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 17)).ok());
  ASSERT_TRUE(kv.MarkComputed(1, 17).ok());  // four full blocks indexed
  const IndexedPrefix one = kv.Indexed(1);
  EXPECT_EQ(one.num_tokens, 16);
  EXPECT_EQ(one.last.id, Table(kv, 1)[3]);
  // Accept only the 8-token prefix, identified by its last cached block.
  const CachedBlock second = {Table(kv, 1)[1], 0};
  std::vector<int> asked;
  kv.SetPrefixHitFilter([&](CachedBlock last, int n) {
    asked.push_back(n);
    return n == 8 && last.id == second.id;
  });
  EXPECT_EQ(kv.FreeBlocksNeeded(Tokens(0, 17)), 3);  // 17 tokens = 5 blocks, 2 of them hits
  EXPECT_EQ(*kv.Allocate(2, Tokens(0, 17)), 8);
  EXPECT_EQ(asked, (std::vector<int>{16, 12, 8, 16, 12, 8}));
  EXPECT_EQ(kv.Indexed(2).num_tokens, 8);
  EXPECT_EQ(kv.Indexed(2).last.id, second.id);
  EXPECT_EQ(kv.prefix_cache_stats().hits, 8);
  // Nothing accepted: no hit at all (the empty prefix needs no approval).
  kv.SetPrefixHitFilter([](CachedBlock, int) { return false; });
  EXPECT_EQ(*kv.Allocate(3, Tokens(0, 17)), 0);
  EXPECT_EQ(kv.Indexed(3).num_tokens, 0);
  kv.SetPrefixHitFilter(nullptr);
  EXPECT_EQ(*kv.Allocate(4, Tokens(0, 17)), 16);
  EXPECT_EQ(kv.Indexed(99).num_tokens, 0);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, FreedBlocksStayCachedForLaterRequests) {
  KvBlockManager kv(Config(4, 4));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 10)).ok());
  ASSERT_TRUE(kv.MarkComputed(1, 10).ok());
  ASSERT_TRUE(kv.Free(1).ok());
  EXPECT_DOUBLE_EQ(kv.Usage(), 0.0);
  EXPECT_EQ(kv.allocator().num_evictable(), 2);
  EXPECT_EQ(kv.FreeBlocksNeeded(Tokens(0, 10)), 3);  // two revived hits + one new block
  EXPECT_EQ(*kv.Allocate(2, Tokens(0, 10)), 8);
  EXPECT_DOUBLE_EQ(kv.Usage(), 3.0 / 4);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, GeneratedTokensAreCachedToo) {
  KvBlockManager kv(Config(4, 8));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 3)).ok());
  ASSERT_TRUE(kv.MarkComputed(1, 3).ok());
  for (int32_t t = 3; t < 9; ++t) {  // decodes: slot, then the step writes it
    ASSERT_TRUE(kv.AppendSlot(1, t).ok());
    ASSERT_TRUE(kv.MarkComputed(1, t + 1).ok());
  }
  ASSERT_TRUE(kv.Free(1).ok());
  // A follow-up turn whose prompt is the whole conversation reuses both full blocks.
  EXPECT_EQ(*kv.Allocate(2, Tokens(0, 12)), 8);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, EvictsLeastRecentlyFreedAndTailBlocksFirst) {
  KvBlockManager kv(Config(2, 6));
  for (SeqId s = 1; s <= 3; ++s) {
    ASSERT_TRUE(kv.Allocate(s, Tokens(100 * s, 4)).ok());
    ASSERT_TRUE(kv.MarkComputed(s, 4).ok());
  }
  const std::vector<BlockId> t1 = Table(kv, 1), t2 = Table(kv, 2), t3 = Table(kv, 3);
  ASSERT_TRUE(kv.Free(2).ok());
  ASSERT_TRUE(kv.Free(1).ok());
  ASSERT_TRUE(kv.Free(3).ok());
  EXPECT_EQ(kv.allocator().EvictionOrder(),
            (std::vector<BlockId>{t2[1], t2[0], t1[1], t1[0], t3[1], t3[0]}));

  // Three new blocks evict 2's two and 1's tail: 1 keeps a one-block hit, 3 its full two.
  ASSERT_TRUE(kv.Allocate(4, Tokens(900, 6)).ok());
  EXPECT_EQ(kv.allocator().EvictionOrder(), (std::vector<BlockId>{t1[0], t3[1], t3[0]}));
  ASSERT_TRUE(kv.Free(4).ok());                       // never computed: back to the plain free pool
  EXPECT_EQ(kv.FreeBlocksNeeded(Tokens(200, 3)), 2);  // 2's prefix is gone
  EXPECT_EQ(*kv.Allocate(5, Tokens(100, 5)), 2);
  EXPECT_EQ(*kv.Allocate(6, Tokens(300, 5)), 4);
  EXPECT_EQ(kv.num_free_blocks(), 0);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, PrefixCachingOff) {
  KvBlockManager kv(Config(4, 8, /*prefix_caching=*/false));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 9)).ok());
  ASSERT_TRUE(kv.MarkComputed(1, 9).ok());
  EXPECT_EQ(*kv.Allocate(2, Tokens(0, 9)), 0);
  EXPECT_EQ(kv.allocator().num_cached(), 0);
  EXPECT_EQ(kv.prefix_cache_stats().queries, 0);
  ASSERT_TRUE(kv.Free(1).ok());
  EXPECT_EQ(kv.allocator().num_evictable(), 0);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, HashCollisionsCostHitsNotCorrectness) {
  KvBlockManager kv(Config(2, 16), ConstantHash);
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 6)).ok());
  ASSERT_TRUE(kv.MarkComputed(1, 6).ok());
  EXPECT_EQ(kv.allocator().num_cached(), 1);  // every later block collides with the first
  EXPECT_EQ(*kv.Allocate(2, Tokens(0, 6)), 2);
  EXPECT_EQ(*kv.Allocate(3, Tokens(50, 6)), 0);
  EXPECT_EQ(*kv.Allocate(4, Concat(Tokens(2, 2), Tokens(0, 4))), 0);
  EXPECT_CONSISTENT(kv);
}

TEST(KvBlockManagerTest, DuplicateBlocksOfConcurrentIdenticalPromptsKeepTheChain) {
  KvBlockManager kv(Config(2, 16));
  ASSERT_TRUE(kv.Allocate(1, Tokens(0, 7)).ok());
  ASSERT_TRUE(kv.Allocate(2, Tokens(0, 7)).ok());  // nothing computed yet: no sharing
  ASSERT_TRUE(kv.MarkComputed(1, 2).ok());         // 1 indexes block 0 only
  ASSERT_TRUE(kv.MarkComputed(2, 7).ok());         // 2 dedups block 0, indexes 1 and 2
  EXPECT_EQ(kv.allocator().num_cached(), 3);
  EXPECT_EQ(*kv.Allocate(3, Tokens(0, 7)), 6);
  const std::vector<BlockId> t1 = Table(kv, 1), t2 = Table(kv, 2), t3 = Table(kv, 3);
  EXPECT_EQ(t3[0], t1[0]);
  EXPECT_EQ(t3[1], t2[1]);
  EXPECT_EQ(t3[2], t2[2]);
  ASSERT_TRUE(kv.MarkComputed(1, 7).ok());  // all duplicates now; nothing new indexed
  EXPECT_EQ(kv.allocator().num_cached(), 3);
  for (SeqId s = 1; s <= 3; ++s) ASSERT_TRUE(kv.Free(s).ok());
  EXPECT_EQ(kv.allocator().num_evictable(), 3);
  EXPECT_DOUBLE_EQ(kv.Usage(), 0.0);
  EXPECT_CONSISTENT(kv);
}

// Random allocate / append / compute / free against a model that records, for every slot, the
// token prefix whose K/V it holds. Checks that a prefix hit only ever returns blocks whose slots
// hold exactly the requested prefix, that writes only go to unshared, unindexed blocks, and the
// bookkeeping invariants after every operation.
TEST(KvBlockManagerTest, RandomOperationsAgainstAModel) {
  for (bool caching : {true, false}) {
    for (int block_size : {1, 3, 4}) {
      SCOPED_TRACE(testing::Message() << "block_size " << block_size << " caching " << caching);
      const int64_t num_blocks = 48 / block_size;
      KvBlockManager kv(Config(block_size, num_blocks, caching));
      std::mt19937 rng(1234 + block_size);
      auto uniform = [&](int lo, int hi) {
        return std::uniform_int_distribution<int>(lo, hi)(rng);
      };
      // Prompts share a few prefixes over a small vocabulary, so that hits are frequent.
      const std::vector<std::vector<int32_t>> prefixes = {
          {}, Tokens(1, 6), {1, 2, 3, 1, 2, 3, 1, 2}, Tokens(3, 12)};

      struct ModelSeq {
        std::vector<int32_t> tokens;
        int computed = 0;
      };
      std::map<SeqId, ModelSeq> seqs;
      std::vector<std::vector<int32_t>> slot_prefix(num_blocks * block_size);
      SeqId next_id = 0;
      int64_t hits = 0;

      auto slot = [&](SeqId id, int pos) {
        return kv.BlockTable(id)[pos / block_size] * block_size + pos % block_size;
      };
      for (int op = 0; op < 6000; ++op) {
        const int kind = seqs.empty() ? 0 : uniform(0, 9);
        auto pick = [&] {
          auto it = seqs.begin();
          std::advance(it, uniform(0, static_cast<int>(seqs.size()) - 1));
          return it;
        };
        if (kind <= 2) {  // allocate
          std::vector<int32_t> tokens = prefixes[uniform(0, 3)];
          for (int n = uniform(tokens.empty() ? 1 : 0, 8); n > 0; --n)
            tokens.push_back(uniform(0, 3));
          const bool must_fit = kv.CanAllocate(static_cast<int64_t>(tokens.size()));
          const int64_t need = kv.FreeBlocksNeeded(tokens);
          const int64_t free_before = kv.num_free_blocks();
          absl::StatusOr<int> cached = kv.Allocate(next_id, tokens);
          if (!cached.ok()) {
            ASSERT_EQ(cached.status().code(), absl::StatusCode::kResourceExhausted);
            ASSERT_FALSE(must_fit);
            ASSERT_GT(need, free_before);
            ASSERT_EQ(kv.num_free_blocks(), free_before);
          } else {
            ASSERT_EQ(kv.num_free_blocks(), free_before - need);
            ASSERT_EQ(*cached % block_size, 0);
            ASSERT_LT(*cached, static_cast<int>(tokens.size()));
            if (!caching) {
              ASSERT_EQ(*cached, 0);
            }
            hits += *cached;
            // Every cached slot holds the K/V of exactly this prefix.
            for (int p = 0; p < *cached; ++p) {
              ASSERT_EQ(slot_prefix[slot(next_id, p)],
                        std::vector<int32_t>(tokens.begin(), tokens.begin() + p + 1))
                  << "position " << p;
            }
            seqs[next_id] = {tokens, *cached};
          }
          ++next_id;
        } else if (kind <= 5) {  // append a slot
          auto it = pick();
          const int32_t t = uniform(0, 3);
          const bool needs_block = it->second.tokens.size() % block_size == 0;
          const bool fits = !needs_block || kv.num_free_blocks() > 0;
          absl::Status s = kv.AppendSlot(it->first, t);
          ASSERT_EQ(s.ok(), fits) << s;
          if (s.ok()) it->second.tokens.push_back(t);
        } else if (kind <= 7) {  // the backend writes some K/V
          auto it = pick();
          ModelSeq& m = it->second;
          const int to = uniform(m.computed, static_cast<int>(m.tokens.size()));
          for (int p = m.computed; p < to; ++p) {
            const BlockId b = kv.BlockTable(it->first)[p / block_size];
            ASSERT_EQ(kv.allocator().ref_count(b), 1) << "write into a shared block";
            ASSERT_FALSE(kv.allocator().IsCached(b)) << "write into an indexed block";
            slot_prefix[slot(it->first, p)].assign(m.tokens.begin(), m.tokens.begin() + p + 1);
          }
          m.computed = to;
          ASSERT_TRUE(kv.MarkComputed(it->first, to).ok());
        } else {  // free
          auto it = pick();
          ASSERT_TRUE(kv.Free(it->first).ok());
          seqs.erase(it);
        }

        // The model's view of the state.
        ASSERT_TRUE(kv.CheckConsistency().ok()) << kv.CheckConsistency();
        std::set<BlockId> used;
        for (const auto& [id, m] : seqs) {
          ASSERT_EQ(kv.NumTokens(id), static_cast<int>(m.tokens.size()));
          ASSERT_EQ(static_cast<int64_t>(kv.BlockTable(id).size()),
                    kv.BlocksForTokens(static_cast<int64_t>(m.tokens.size())));
          for (BlockId b : kv.BlockTable(id)) used.insert(b);
        }
        ASSERT_EQ(static_cast<int64_t>(used.size()) + kv.num_free_blocks(), num_blocks);
        ASSERT_DOUBLE_EQ(kv.Usage(), static_cast<double>(used.size()) / num_blocks);
      }
      if (caching) {
        EXPECT_GT(hits, 0);
        EXPECT_EQ(kv.prefix_cache_stats().hits, hits);
      }
      for (const auto& [id, m] : seqs) ASSERT_TRUE(kv.Free(id).ok());
      EXPECT_DOUBLE_EQ(kv.Usage(), 0.0);
      EXPECT_EQ(kv.num_free_blocks(), num_blocks);
      for (BlockId b = 0; b < num_blocks; ++b) EXPECT_EQ(kv.allocator().ref_count(b), 0);
      EXPECT_CONSISTENT(kv);
    }
  }
}

}  // namespace
}  // namespace loom::kv
