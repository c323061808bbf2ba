// DuoPattern (gates TSV + JSON, sparsity -> streaming heads) and DuoLayout (per-layer slots,
// widths, offsets and byte counts): pure code.
#include "engine/model/duo_pattern.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace loom::engine {
namespace {

ModelConfig Config(int layers, int kv_heads, int head_dim = 64) {
  ModelConfig c;
  c.n_layers = layers;
  c.n_kv_heads = kv_heads;
  c.n_heads = kv_heads * 3;
  c.head_dim = head_dim;
  return c;
}

TEST(DuoPattern, ParsesReferenceTsvShape) {
  auto p = DuoPattern::ParseGatesTsv("0.5\t1\t0\n0.25\t0.75\t1.0\n\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->n_layers, 2);
  EXPECT_EQ(p->n_kv_heads, 3);
  EXPECT_EQ(p->gates, (std::vector<float>{0.5f, 1, 0, 0.25f, 0.75f, 1}));
}

TEST(DuoPattern, RejectsBadTsv) {
  EXPECT_FALSE(DuoPattern::ParseGatesTsv("").ok());
  EXPECT_FALSE(DuoPattern::ParseGatesTsv("0.5\t0.2\n0.1\n").ok());  // ragged
  EXPECT_FALSE(DuoPattern::ParseGatesTsv("0.5\tabc\n").ok());
  EXPECT_FALSE(DuoPattern::ParseGatesTsv("1.5\t0.2\n").ok());  // out of [0, 1]
  EXPECT_FALSE(DuoPattern::ParseGatesTsv("-0.1\n").ok());
  auto s = DuoPattern::ParseGatesTsv("0.5\t0.2\n0.1\n");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.status().message()).find("line 2"), std::string::npos);
}

TEST(DuoPattern, SparsityTakesLowestGatesWithDeterministicTies) {
  DuoPattern p;
  p.n_layers = 2;
  p.n_kv_heads = 3;
  p.gates = {0.9f, 0.1f, 0.5f, 0.5f, 0.1f, 0.5f};
  auto flags = [&](double s) {
    std::vector<bool> f = p.StreamingHeads(s);
    std::string out;
    for (bool b : f) out += b ? 'S' : 'R';
    return out;
  };
  EXPECT_EQ(flags(0.0), "RRRRRR");
  EXPECT_EQ(flags(0.1), "RRRRRR");  // floor(0.6) = 0
  EXPECT_EQ(flags(1.0), "SSSSSS");
  EXPECT_EQ(flags(0.34), "RSRRSR");  // the two 0.1s
  // Three equal 0.5s, one slot left: (layer 0, head 2) comes first.
  EXPECT_EQ(flags(0.5), "RSSRSR");
  EXPECT_EQ(flags(0.67), "RSSSSR");
  EXPECT_EQ(flags(0.99), "RSSSSS");
}

TEST(DuoPattern, LayoutChecksShapeAndSparsity) {
  auto p = DuoPattern::ParseGatesTsv("0.5\t1\t0\n0.25\t0.75\t1.0\n");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->Layout(Config(2, 3), 0.5).ok());
  auto wrong = p->Layout(Config(30, 3), 0.5);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(wrong.status().message()).find("30 layers"), std::string::npos);
  EXPECT_FALSE(p->Layout(Config(2, 4), 0.5).ok());
  EXPECT_FALSE(p->Layout(Config(2, 3), -0.1).ok());
  EXPECT_FALSE(p->Layout(Config(2, 3), 1.1).ok());
}

TEST(DuoLayout, SlotsWidthsOffsetsAndBytes) {
  // Layer 0: heads 0, 2 stream; layer 1: none; layer 2: all three.
  auto d = DuoLayout::Create(Config(3, 3, 8),
                             {true, false, true, false, false, false, true, true, true}, 4, 6);
  ASSERT_TRUE(d.ok()) << d.status();
  const DuoLayout& l = **d;
  EXPECT_EQ(l.window(), 10);
  EXPECT_EQ(l.TotalStreaming(), 5);
  EXPECT_EQ(l.NumRetrieval(0), 1);
  EXPECT_EQ(l.NumRetrieval(1), 3);
  EXPECT_EQ(l.NumRetrieval(2), 0);
  EXPECT_EQ(l.Slot(0, 0), 0);
  EXPECT_EQ(l.Slot(0, 1), 0);
  EXPECT_EQ(l.Slot(0, 2), 1);
  EXPECT_EQ(l.Slot(1, 2), 2);
  EXPECT_EQ(l.RetrievalLayerOffset(1), 8u);
  EXPECT_EQ(l.RetrievalLayerOffset(2), 32u);
  EXPECT_EQ(l.RetrievalElemsPerToken(), 32u);
  EXPECT_EQ(l.StreamingLayerOffset(2), 16u);
  EXPECT_EQ(l.StreamingElemsPerToken(), 40u);
  EXPECT_EQ(l.RetrievalBytesPerToken(), 2 * 32 * 2);
  EXPECT_EQ(l.StreamingBytesPerSequence(), 2 * 40 * 10 * 2);
  EXPECT_EQ(l.StreamingPerLayer(), "2 0 3");
  EXPECT_FALSE(DuoLayout::Create(Config(3, 3), {true}, 4, 6).ok());
  EXPECT_FALSE(DuoLayout::Create(Config(1, 1), {true}, -1, 6).ok());
  EXPECT_FALSE(DuoLayout::Create(Config(1, 1), {true}, 4, 0).ok());
}

TEST(StreamingKv, RingSlotsKeepSinkAndRecent) {
  auto d = DuoLayout::Create(Config(1, 1, 4), {true}, 2, 3);
  ASSERT_TRUE(d.ok());
  StreamingKv kv(*d);
  EXPECT_EQ(kv.bytes(), 2 * 4 * 5 * 2);
  EXPECT_EQ(kv.SlotOf(0), 0);
  EXPECT_EQ(kv.SlotOf(1), 1);
  EXPECT_EQ(kv.SlotOf(2), 2);
  EXPECT_EQ(kv.SlotOf(4), 4);
  EXPECT_EQ(kv.SlotOf(5), 2);
  std::vector<int> held;
  for (int p = 0; p < 9; ++p) {
    if (kv.Holds(p, 9)) held.push_back(p);
  }
  EXPECT_EQ(held, (std::vector<int>{0, 1, 6, 7, 8}));
}

TEST(DuoPattern, LoadsJsonWithRelativeGates) {
  const auto dir = std::filesystem::temp_directory_path() / "loom_duo_pattern_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "g.tsv") << "0.1\t0.9\n0.8\t0.2\n";
  std::ofstream(dir / "p.json") << R"({"gates": "g.tsv", "sink": 16, "recent": 32, "note": "x"})";
  auto p = DuoPattern::LoadJson((dir / "p.json").string());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->sink, 16);
  EXPECT_EQ(p->recent, 32);
  EXPECT_EQ(p->n_layers, 2);
  auto layout = p->Layout(Config(2, 2), 0.5);
  ASSERT_TRUE(layout.ok());
  EXPECT_TRUE((*layout)->IsStreaming(0, 0));
  EXPECT_TRUE((*layout)->IsStreaming(1, 1));
  EXPECT_FALSE((*layout)->IsStreaming(0, 1));

  std::ofstream(dir / "bad.json") << R"({"sink": 16})";
  EXPECT_EQ(DuoPattern::LoadJson((dir / "bad.json").string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::ofstream(dir / "bad2.json") << R"({"gates": "g.tsv", "recent": 0})";
  EXPECT_FALSE(DuoPattern::LoadJson((dir / "bad2.json").string()).ok());
  std::ofstream(dir / "bad3.json") << R"({"gates": "missing.tsv"})";
  EXPECT_EQ(DuoPattern::LoadJson((dir / "bad3.json").string()).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loom::engine
