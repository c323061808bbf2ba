#include "engine/kv_cache/block_allocator.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace loom::kv {
namespace {

uint64_t ConstantHash(uint64_t, std::span<const int32_t>) { return 42; }

std::vector<int32_t> Tokens(int32_t first, int n) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

TEST(BlockAllocatorTest, HandsOutEveryBlockOnceThenNone) {
  BlockAllocator pool(8, 4);
  std::set<BlockId> seen;
  for (int i = 0; i < 8; ++i) {
    const BlockId b = pool.Allocate();
    ASSERT_NE(b, kNoBlock);
    EXPECT_TRUE(seen.insert(b).second) << "block " << b << " handed out twice";
    EXPECT_EQ(pool.ref_count(b), 1);
  }
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_EQ(pool.Allocate(), kNoBlock);
  for (BlockId b : seen) pool.Unref(b);
  EXPECT_EQ(pool.num_free(), 8);
  EXPECT_TRUE(pool.CheckConsistency().ok()) << pool.CheckConsistency();
}

TEST(BlockAllocatorTest, RefCountsShareABlock) {
  BlockAllocator pool(2, 4);
  const BlockId b = pool.Allocate();
  pool.Ref(b);
  EXPECT_EQ(pool.ref_count(b), 2);
  pool.Unref(b);
  EXPECT_EQ(pool.num_free(), 1);
  pool.Unref(b);
  EXPECT_EQ(pool.ref_count(b), 0);
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_TRUE(pool.CheckConsistency().ok()) << pool.CheckConsistency();
}

TEST(BlockAllocatorTest, FindsAChainOfCachedBlocksExactly) {
  BlockAllocator pool(4, 4);
  const BlockId a = pool.Allocate();
  const BlockId b = pool.Allocate();
  const CachedBlock ca = pool.Insert(a, {}, Tokens(0, 4));
  ASSERT_EQ(ca.id, a);
  const CachedBlock cb = pool.Insert(b, ca, Tokens(4, 4));
  ASSERT_EQ(cb.id, b);
  EXPECT_EQ(pool.num_cached(), 2);

  EXPECT_EQ(pool.Find({}, Tokens(0, 4)).id, a);
  EXPECT_EQ(pool.Find(ca, Tokens(4, 4)).id, b);
  EXPECT_EQ(pool.Find({}, Tokens(4, 4)).id, kNoBlock);  // same tokens, other prefix
  EXPECT_EQ(pool.Find(ca, Tokens(5, 4)).id, kNoBlock);  // other tokens
  EXPECT_EQ(pool.Find(ca, Tokens(4, 3)).id, kNoBlock);  // not a full block
  EXPECT_NE(pool.hash(a), pool.hash(b));
  EXPECT_TRUE(pool.CheckConsistency().ok()) << pool.CheckConsistency();
}

TEST(BlockAllocatorTest, InsertingTheSamePrefixTwiceKeepsTheFirstBlock) {
  BlockAllocator pool(4, 4);
  const BlockId a = pool.Allocate();
  const BlockId b = pool.Allocate();
  ASSERT_EQ(pool.Insert(a, {}, Tokens(0, 4)).id, a);
  EXPECT_EQ(pool.Insert(b, {}, Tokens(0, 4)).id, a);
  EXPECT_FALSE(pool.IsCached(b));
  pool.Unref(b);  // uncached: straight back to the free pool
  EXPECT_EQ(pool.num_evictable(), 0);
  EXPECT_TRUE(pool.CheckConsistency().ok()) << pool.CheckConsistency();
}

TEST(BlockAllocatorTest, FreedCachedBlocksAreEvictedLeastRecentlyUsedFirst) {
  BlockAllocator pool(4, 2);
  std::vector<BlockId> b(4);
  for (int i = 0; i < 4; ++i) {
    b[i] = pool.Allocate();
    ASSERT_EQ(pool.Insert(b[i], {}, Tokens(10 * i, 2)).id, b[i]);
  }
  pool.Unref(b[2]);
  pool.Unref(b[0]);
  pool.Unref(b[3]);
  pool.Unref(b[1]);
  EXPECT_EQ(pool.EvictionOrder(), (std::vector<BlockId>{b[2], b[0], b[3], b[1]}));
  EXPECT_EQ(pool.num_free(), 4);

  // A hit takes b[0] out of the pool; freed again, it becomes the most recently used.
  const CachedBlock hit = pool.Find({}, Tokens(0, 2));
  ASSERT_EQ(hit.id, b[0]);
  pool.Ref(hit.id);
  EXPECT_EQ(pool.EvictionOrder(), (std::vector<BlockId>{b[2], b[3], b[1]}));
  pool.Unref(hit.id);
  EXPECT_EQ(pool.EvictionOrder(), (std::vector<BlockId>{b[2], b[3], b[1], b[0]}));

  // Fresh blocks come from the evictable pool in that order, and leave the index.
  EXPECT_EQ(pool.Allocate(), b[2]);
  EXPECT_EQ(pool.Find({}, Tokens(20, 2)).id, kNoBlock);
  EXPECT_EQ(pool.Find({}, Tokens(30, 2)).id, b[3]);
  EXPECT_EQ(pool.Allocate(), b[3]);
  EXPECT_EQ(pool.num_cached(), 2);
  EXPECT_TRUE(pool.CheckConsistency().ok()) << pool.CheckConsistency();
}

TEST(BlockAllocatorTest, UncachedFreeBlocksAreUsedBeforeEvicting) {
  BlockAllocator pool(3, 2);
  const BlockId cached = pool.Allocate();
  ASSERT_EQ(pool.Insert(cached, {}, Tokens(0, 2)).id, cached);
  pool.Unref(cached);
  const BlockId x = pool.Allocate();
  const BlockId y = pool.Allocate();
  EXPECT_NE(x, cached);
  EXPECT_NE(y, cached);
  EXPECT_EQ(pool.Find({}, Tokens(0, 2)).id, cached);
  EXPECT_EQ(pool.Allocate(), cached);  // now it must be evicted
  EXPECT_EQ(pool.Find({}, Tokens(0, 2)).id, kNoBlock);
  EXPECT_EQ(pool.Allocate(), kNoBlock);
}

TEST(BlockAllocatorTest, EvictedParentHidesItsChildrenEvenIfTheSlotIsReused) {
  BlockAllocator pool(2, 2);
  const BlockId p = pool.Allocate();
  const CachedBlock cp = pool.Insert(p, {}, Tokens(0, 2));
  const BlockId c = pool.Allocate();
  const CachedBlock cc = pool.Insert(c, cp, Tokens(2, 2));
  ASSERT_EQ(cc.id, c);
  pool.Unref(p);  // parent evicted first
  const BlockId again = pool.Allocate();
  ASSERT_EQ(again, p);
  // The same block now holds a different first block; the old child must not match under it.
  const CachedBlock other = pool.Insert(again, {}, Tokens(100, 2));
  ASSERT_EQ(other.id, p);
  EXPECT_NE(other.stamp, cp.stamp);
  EXPECT_EQ(pool.Find(other, Tokens(2, 2)).id, kNoBlock);
  EXPECT_EQ(pool.Find(cp, Tokens(2, 2)).id, kNoBlock);  // stale parent
  // Indexing under a stale parent is refused.
  pool.Unref(c);
  const BlockId d = pool.Allocate();  // evicts c
  ASSERT_EQ(d, c);
  EXPECT_EQ(pool.Insert(d, cp, Tokens(2, 2)).id, kNoBlock);
  EXPECT_TRUE(pool.CheckConsistency().ok()) << pool.CheckConsistency();
}

TEST(BlockAllocatorTest, HashCollisionsNeverReturnOtherContent) {
  BlockAllocator pool(4, 2, ConstantHash);  // every key collides
  const BlockId a = pool.Allocate();
  const BlockId b = pool.Allocate();
  ASSERT_EQ(pool.Insert(a, {}, Tokens(0, 2)).id, a);
  EXPECT_EQ(pool.Insert(b, {}, Tokens(5, 2)).id, kNoBlock);  // slot taken by other content
  EXPECT_EQ(pool.Find({}, Tokens(5, 2)).id, kNoBlock);
  EXPECT_EQ(pool.Find({}, Tokens(0, 2)).id, a);
  const CachedBlock ca{a, pool.Find({}, Tokens(0, 2)).stamp};
  EXPECT_EQ(pool.Find(ca, Tokens(0, 2)).id, kNoBlock);  // same tokens, other parent
  EXPECT_TRUE(pool.CheckConsistency().ok()) << pool.CheckConsistency();
}

TEST(BlockAllocatorTest, DefaultHashIsChained) {
  const std::vector<int32_t> t = Tokens(0, 16);
  EXPECT_EQ(DefaultBlockHash(kRootBlockHash, t), DefaultBlockHash(kRootBlockHash, t));
  EXPECT_NE(DefaultBlockHash(kRootBlockHash, t), DefaultBlockHash(kRootBlockHash + 1, t));
  std::vector<int32_t> u = t;
  u[15] = 99;
  EXPECT_NE(DefaultBlockHash(kRootBlockHash, t), DefaultBlockHash(kRootBlockHash, u));
}

}  // namespace
}  // namespace loom::kv
