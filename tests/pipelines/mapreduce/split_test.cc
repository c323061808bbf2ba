// SplitDocument with deterministic token counters: the budget always holds (also when pieces
// merge into more tokens than their sum), nothing is lost, oversized paragraphs are cut at
// sentence ends, then at spaces, then anywhere; a short last chunk is rebalanced; PackConsecutive.
#include "pipelines/mapreduce/split.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace loom::pipelines::mapreduce {
namespace {

// Words (runs of non-space) plus one per newline: additive over concatenation at spaces.
int Words(std::string_view s) {
  int n = 0;
  bool in_word = false;
  for (char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++n;
    if (c == '\n') ++n;
    in_word = !space;
  }
  return n;
}

TokenCounter WordCounter() {
  return SequentialCounter([](std::string_view s) -> absl::StatusOr<int> { return Words(s); });
}

// Joins chunks as SplitDocument documents it.
std::string Rejoin(const std::vector<Chunk>& chunks) {
  std::string out;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i > 0 && chunks[i].starts_paragraph) out += '\n';
    out += chunks[i].text;
  }
  return out;
}

std::string Sentence(int words, int seed) {
  std::string s;
  for (int i = 0; i < words; ++i) absl::StrAppend(&s, i ? " " : "", "w", seed, "_", i);
  return s + ".";
}

std::string Paragraph(int sentences, int words, int seed) {
  std::string p;
  for (int i = 0; i < sentences; ++i) absl::StrAppend(&p, i ? " " : "", Sentence(words, seed + i));
  return p;
}

void ExpectWithinBudget(const std::vector<Chunk>& chunks, int budget,
                        const std::function<int(std::string_view)>& count) {
  for (const Chunk& c : chunks) {
    EXPECT_LE(c.tokens, budget) << c.text;
    EXPECT_EQ(c.tokens, count(c.text)) << c.text;
    EXPECT_FALSE(c.text.empty());
  }
}

TEST(SplitTest, SmallDocumentIsOneChunk) {
  auto chunks = SplitDocument("one two three\nfour five", 100, WordCounter());
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ASSERT_EQ(chunks->size(), 1u);
  EXPECT_EQ((*chunks)[0].text, "one two three\nfour five");
  EXPECT_EQ((*chunks)[0].tokens, 6);
}

TEST(SplitTest, BlankLinesDroppedAndEmptyDocumentGivesNoChunks) {
  auto chunks = SplitDocument("a b\n\n  \n\nc d\n", 100, WordCounter());
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 1u);
  EXPECT_EQ((*chunks)[0].text, "a b\nc d");
  auto none = SplitDocument(" \n\n\t", 100, WordCounter());
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(SplitDocument("x", 0, WordCounter()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SplitTest, PacksParagraphsGreedily) {
  // Paragraphs of 9 words; budget 25: two paragraphs (9 + 1 + 9) per chunk.
  std::vector<std::string> paras;
  for (int i = 0; i < 6; ++i) paras.push_back(Paragraph(1, 9, i * 10));
  const std::string doc = absl::StrJoin(paras, "\n");
  auto chunks = SplitDocument(doc, 25, WordCounter());
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 3u);
  for (const Chunk& c : *chunks) {
    EXPECT_TRUE(c.starts_paragraph);
    EXPECT_EQ(std::count(c.text.begin(), c.text.end(), '\n'), 1);
  }
  EXPECT_EQ(Rejoin(*chunks), doc);
}

TEST(SplitTest, OversizedParagraphIsCutAtSentenceEnds) {
  const std::string doc = Paragraph(6, 8, 0);  // 6 sentences of 8 words
  auto chunks = SplitDocument(doc, 20, WordCounter());
  ASSERT_TRUE(chunks.ok());
  ExpectWithinBudget(*chunks, 20, Words);
  EXPECT_EQ(chunks->size(), 3u);  // two sentences (16 words) each
  for (size_t i = 0; i < chunks->size(); ++i) {
    const std::string& t = (*chunks)[i].text;
    EXPECT_TRUE(t.ends_with(". ") || t.ends_with(".")) << t;
    EXPECT_EQ((*chunks)[i].starts_paragraph, i == 0);
  }
  EXPECT_EQ(Rejoin(*chunks), doc);
}

TEST(SplitTest, OversizedSentenceIsCutAtSpaces) {
  std::string doc;
  for (int i = 0; i < 50; ++i) absl::StrAppend(&doc, i ? " " : "", "word", i);  // no sentence end
  auto chunks = SplitDocument(doc, 12, WordCounter());
  ASSERT_TRUE(chunks.ok());
  ExpectWithinBudget(*chunks, 12, Words);
  for (size_t i = 0; i + 1 < chunks->size(); ++i) {
    EXPECT_TRUE((*chunks)[i].text.ends_with(" ")) << (*chunks)[i].text;  // cut after a space
  }
  EXPECT_EQ(Rejoin(*chunks), doc);
}

TEST(SplitTest, OversizedSentenceIsCutAfterCommasFirst) {
  // A JSON object on one line: chunks end between pairs, never between a key and its value.
  std::string doc = "{";
  for (int i = 0; i < 40; ++i) absl::StrAppend(&doc, i ? ", " : "", "\"k", i, "\": \"v", i, "\"");
  doc += "}";
  auto chunks = SplitDocument(doc, 9, WordCounter());
  ASSERT_TRUE(chunks.ok());
  ASSERT_GT(chunks->size(), 4u);
  ExpectWithinBudget(*chunks, 9, Words);
  for (size_t i = 0; i + 1 < chunks->size(); ++i) {
    EXPECT_TRUE((*chunks)[i].text.ends_with("\", ")) << (*chunks)[i].text;
  }
  EXPECT_EQ(Rejoin(*chunks), doc);
  EXPECT_EQ(SplitClauses("a, b,c ,  d"), (std::vector<std::string_view>{"a, ", "b,c ,  ", "d"}));
}

TEST(SplitTest, OversizedWordIsCutAnywhere) {
  const std::string word(301, 'x');
  auto count = [](std::string_view s) -> absl::StatusOr<int> {
    return static_cast<int>((s.size() + 3) / 4);
  };
  auto chunks = SplitDocument(word, 10, SequentialCounter(count));
  ASSERT_TRUE(chunks.ok());
  for (const Chunk& c : *chunks) EXPECT_LE(c.tokens, 10);
  EXPECT_EQ(chunks->size(), 8u);  // 40 bytes (10 tokens) each, then 21 bytes
  EXPECT_EQ(Rejoin(*chunks), word);
}

TEST(SplitTest, CutsKeepUtf8Whole) {
  std::string word;
  for (int i = 0; i < 40; ++i) word += "\xC3\xA9";  // é, 2 bytes
  auto count = [](std::string_view s) -> absl::StatusOr<int> {
    return static_cast<int>(s.size());  // one token per byte
  };
  auto chunks = SplitDocument(word, 7, SequentialCounter(count));
  ASSERT_TRUE(chunks.ok());
  for (const Chunk& c : *chunks) {
    EXPECT_EQ(c.text.size() % 2, 0u) << "a code point was cut";
    EXPECT_LE(c.tokens, 7);
  }
  EXPECT_EQ(Rejoin(*chunks), word);
}

TEST(SplitTest, ShortLastChunkIsRebalanced) {
  // One paragraph of 12 ten-word sentences, budget 100: greedy gives 100 + 20; rebalanced 60 + 60.
  std::string doc10;
  for (int i = 0; i < 12; ++i) absl::StrAppend(&doc10, i ? " " : "", Sentence(10, i * 100));
  auto chunks = SplitDocument(doc10, 100, WordCounter());
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 2u);
  EXPECT_EQ((*chunks)[0].tokens, 60);
  EXPECT_EQ((*chunks)[1].tokens, 60);
  EXPECT_EQ(Rejoin(*chunks), doc10);
}

TEST(SplitTest, RebalanceCutsInsideAWholeParagraph) {
  // A 90-word paragraph of nine sentences, then a 10-word one; budget 95: greedy 90 | 10.
  const std::string a = Paragraph(9, 10, 0);
  const std::string b = Paragraph(1, 10, 50);
  const std::string doc = a + "\n" + b;
  auto chunks = SplitDocument(doc, 95, WordCounter());
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 2u);
  EXPECT_GE((*chunks)[1].tokens, 95 / 2);
  EXPECT_FALSE((*chunks)[1].starts_paragraph);
  ExpectWithinBudget(*chunks, 95, Words);
  EXPECT_EQ(Rejoin(*chunks), doc);
}

// A counter whose whole can exceed the sum of its parts: words + one per started 40 bytes.
int Superadditive(std::string_view s) { return Words(s) + static_cast<int>(s.size() / 40); }

TEST(SplitTest, BudgetHoldsOnRandomDocuments) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    std::string doc;
    const int paras = 1 + rng() % 30;
    for (int p = 0; p < paras; ++p) {
      const int kind = rng() % 10;
      std::string para;
      if (kind == 0) {
        para = std::string(20 + rng() % 400, 'z');  // one long "word"
      } else if (kind == 1) {
        for (int w = 0; w < 40 + static_cast<int>(rng() % 100); ++w) {
          absl::StrAppend(&para, w ? " " : "", "t", w);  // a long sentence
        }
      } else {
        para = Paragraph(1 + rng() % 8, 1 + rng() % 15, p * 1000);
      }
      absl::StrAppend(&doc, p ? (rng() % 4 == 0 ? "\n\n" : "\n") : "", para);
    }
    for (int budget : {8, 30, 100}) {
      for (auto fn : {&Words, &Superadditive}) {
        auto count = [fn](std::string_view s) -> absl::StatusOr<int> { return fn(s); };
        auto chunks = SplitDocument(doc, budget, SequentialCounter(count));
        ASSERT_TRUE(chunks.ok()) << chunks.status();
        ExpectWithinBudget(*chunks, budget, fn);
        std::string no_blank;
        for (char c : doc) {
          if (c != '\n' || (!no_blank.empty() && no_blank.back() != '\n')) no_blank += c;
        }
        EXPECT_EQ(Rejoin(*chunks), no_blank) << "trial " << trial << " budget " << budget;
      }
    }
  }
}

TEST(SplitTest, CounterErrorsPropagate) {
  auto failing = SequentialCounter(
      [](std::string_view) -> absl::StatusOr<int> { return absl::UnavailableError("down"); });
  EXPECT_EQ(SplitDocument("a b c", 10, failing).status().code(), absl::StatusCode::kUnavailable);
}

TEST(SplitSentencesTest, KeepsPunctuationAndSpace) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(SplitSentences("One. Two?  Three! Four; five"),
            (V{"One. ", "Two?  ", "Three! ", "Four; ", "five"}));
  EXPECT_EQ(SplitSentences("Pi is 3.14 today."), (V{"Pi is 3.14 today."}));
  EXPECT_EQ(SplitSentences("\xE4\xB8\x80\xE3\x80\x82\xE4\xBA\x8C\xEF\xBC\x81"),
            (V{"\xE4\xB8\x80\xE3\x80\x82", "\xE4\xBA\x8C\xEF\xBC\x81"}));
  EXPECT_EQ(SplitWords("a  b c"), (V{"a  ", "b ", "c"}));
  EXPECT_TRUE(SplitSentences("").empty());
}

TEST(PackConsecutiveTest, GroupsUnderTheBudget) {
  const std::vector<int> counts = {4, 4, 4, 9, 1, 1};
  auto groups = PackConsecutive(counts, 10, 1);
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(*groups, (std::vector<std::vector<int>>{{0, 1}, {2}, {3}, {4, 5}}));
  auto no_sep = PackConsecutive(counts, 12, 0);
  ASSERT_TRUE(no_sep.ok());
  EXPECT_EQ(*no_sep, (std::vector<std::vector<int>>{{0, 1, 2}, {3, 4, 5}}));
  auto too_big = PackConsecutive(std::vector<int>{3, 11}, 10, 0);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(too_big.status().message().find("item 1"), std::string::npos);
  auto empty = PackConsecutive(std::vector<int>{}, 10, 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace loom::pipelines::mapreduce
