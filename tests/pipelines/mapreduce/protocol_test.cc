// The structured information protocol: parsing grammar-shaped and free-form outputs, formatting,
// and the GBNF grammars (they compile, accept what FormatChunkResult writes, bound each field).
#include "pipelines/mapreduce/protocol.h"

#include "engine/grammar/grammar.h"
#include "gtest/gtest.h"
#include "pipelines/mapreduce/prompts.h"

namespace loom::pipelines::mapreduce {
namespace {

TEST(ProtocolTest, ParsesTheGrammarShape) {
  ChunkResult r = ParseChunkResult(
      "Extracted Information: The pass key is 71432.\nRationale: The text states it.\n"
      "Answer: 71432\nConfidence Score: 5.0",
      3);
  EXPECT_TRUE(r.parsed);
  EXPECT_EQ(r.index, 3);
  EXPECT_EQ(r.extracted, "The pass key is 71432.");
  EXPECT_EQ(r.rationale, "The text states it.");
  EXPECT_EQ(r.answer, "71432");
  EXPECT_DOUBLE_EQ(r.confidence, 5.0);
  EXPECT_FALSE(r.no_information);
}

TEST(ProtocolTest, ParsesLooseFormats) {
  ChunkResult r = ParseChunkResult(
      "Sure!\n1. **Extracted Information:** Mara keeps bees\nand sells honey.\n"
      "2. **Reasoning**: stated\n3. Answer: yes\n4. Confidence Score: 4/5 points\n",
      0);
  EXPECT_TRUE(r.parsed);
  EXPECT_EQ(r.extracted, "Mara keeps bees\nand sells honey.");
  EXPECT_EQ(r.rationale, "stated");
  EXPECT_EQ(r.answer, "yes");
  EXPECT_DOUBLE_EQ(r.confidence, 4.0);

  ChunkResult clamp =
      ParseChunkResult("Extracted Information: x\nRationale: y\nAnswer: z\nConfidence: 17", 0);
  EXPECT_TRUE(clamp.parsed);
  EXPECT_DOUBLE_EQ(clamp.confidence, 5.0);
}

TEST(ProtocolTest, AnswerInsideRationaleIsNotALabel) {
  ChunkResult r = ParseChunkResult(
      "Extracted Information: a\nRationale: the answer: maybe b\nAnswer: c\nConfidence Score: 2.5",
      0);
  EXPECT_EQ(r.rationale, "the answer: maybe b");
  EXPECT_EQ(r.answer, "c");
}

TEST(ProtocolTest, IncompleteOutputsAreMarked) {
  ChunkResult no_score =
      ParseChunkResult("Extracted Information: a\nRationale: b\nAnswer: c\nConfidence Score:", 1);
  EXPECT_FALSE(no_score.parsed);
  EXPECT_EQ(no_score.answer, "c");
  EXPECT_DOUBLE_EQ(no_score.confidence, 0);

  ChunkResult cut = ParseChunkResult("Extracted Information: a long text that was cut", 1);
  EXPECT_FALSE(cut.parsed);
  EXPECT_EQ(cut.extracted, "a long text that was cut");

  ChunkResult junk = ParseChunkResult("  I cannot help with that.  ", 1);
  EXPECT_FALSE(junk.parsed);
  EXPECT_EQ(junk.extracted, "I cannot help with that.");
  EXPECT_TRUE(junk.answer.empty());
}

TEST(ProtocolTest, NoInformation) {
  EXPECT_TRUE(IsNoInformation("[NO INFORMATION]"));
  EXPECT_TRUE(IsNoInformation("The answer is [No Information]."));
  EXPECT_FALSE(IsNoInformation("no information"));
  ChunkResult r = ParseChunkResult(
      "Extracted Information: none\nRationale: nothing here\nAnswer: [NO INFORMATION]\n"
      "Confidence Score: 0.0",
      0);
  EXPECT_TRUE(r.parsed);
  EXPECT_TRUE(r.no_information);
}

TEST(ProtocolTest, FormatRoundTrips) {
  ChunkResult r;
  r.index = 2;
  r.extracted = "facts";
  r.rationale = "why";
  r.answer = "42";
  r.confidence = 4.5;
  r.parsed = true;
  const std::string text = FormatChunkResult(r);
  EXPECT_EQ(text,
            "Extracted Information: facts\nRationale: why\nAnswer: 42\nConfidence Score: 4.5");
  ChunkResult back = ParseChunkResult(text, 2);
  EXPECT_EQ(back.extracted, r.extracted);
  EXPECT_EQ(back.rationale, r.rationale);
  EXPECT_EQ(back.answer, r.answer);
  EXPECT_DOUBLE_EQ(back.confidence, r.confidence);
  EXPECT_TRUE(back.parsed);
  EXPECT_EQ(FormatEvidence({r, r}), "Part 1:\n" + text + "\n\nPart 2:\n" + text + "\n\n");
}

TEST(ProtocolTest, CapUnlessLiteral) {
  const std::string chunk = "Some text.  The pass key is\n71432. Remember it.";
  ChunkResult r;
  r.confidence = 5.0;
  r.answer = "the pass key is 71432.";  // case, white space and the period do not matter
  EXPECT_FALSE(CapUnlessLiteral(&r, chunk, 3.0));
  EXPECT_DOUBLE_EQ(r.confidence, 5.0);
  r.answer = "\"71432\"";
  EXPECT_FALSE(CapUnlessLiteral(&r, chunk, 3.0));
  r.answer = "The pass key is a pass key.";  // not in the chunk
  EXPECT_TRUE(CapUnlessLiteral(&r, chunk, 3.0));
  EXPECT_DOUBLE_EQ(r.confidence, 3.0);
  r.confidence = 2.0;  // under the cap: left alone
  EXPECT_FALSE(CapUnlessLiteral(&r, chunk, 3.0));
  EXPECT_DOUBLE_EQ(r.confidence, 2.0);
  r.confidence = 5.0;
  r.answer = "";
  EXPECT_TRUE(CapUnlessLiteral(&r, chunk, 4.5));
  r.confidence = 5.0;
  r.answer = kNoInformation;
  EXPECT_TRUE(CapUnlessLiteral(&r, std::string(chunk) + kNoInformation, 4.5));
  EXPECT_DOUBLE_EQ(r.confidence, 4.5);
}

TEST(ProtocolTest, AnswerIsLiteralAtWordBoundaries) {
  const std::string chunk = "The sequence of digits is 4414277777. Remember it.";
  ChunkResult r;
  r.answer = "The sequence of digits is 4414277777.";
  EXPECT_TRUE(AnswerIsLiteral(r, chunk));
  r.answer = "4414277777";
  EXPECT_TRUE(AnswerIsLiteral(r, chunk));
  r.answer = "The sequence of digits is 441427777.";  // SmolLM2 dropped a 7 (128K number_string)
  EXPECT_FALSE(AnswerIsLiteral(r, chunk));
  r.answer = "414277777";
  EXPECT_FALSE(AnswerIsLiteral(r, chunk));
  r.answer = "Remember it";
  EXPECT_TRUE(AnswerIsLiteral(r, chunk));
  // A hyphen between letters or digits joins a word: half a UUID is no copy of it.
  const std::string kv = R"({"4929811a-e93d": "3e2adb43-525e-479d", "a": "x-"})";
  r.answer = "3e2adb43-525e";
  EXPECT_FALSE(AnswerIsLiteral(r, kv));
  r.answer = "525e-479d";
  EXPECT_FALSE(AnswerIsLiteral(r, kv));
  r.answer = "3e2adb43-525e-479d";
  EXPECT_TRUE(AnswerIsLiteral(r, kv));
  r.answer = "x";
  EXPECT_TRUE(AnswerIsLiteral(r, kv));
}

// The notes SmolLM2-135M wrote on one 16K pass-key document (2,000-token chunks): the correct one
// scored 0.0, an invented one 4.5, a copied but unrelated sentence 1.1.
TEST(ProtocolTest, GroundedNotesAreReadFirst) {
  const std::string chunk =
      "6. There Is Always Room. What the essay is about. The pass key is 71112. Remember it.\n"
      "71112 is the pass key.";
  auto note = [](int index, std::string extracted, double confidence) {
    ChunkResult r;
    r.index = index;
    r.extracted = std::move(extracted);
    r.confidence = confidence;
    return r;
  };
  std::vector<ChunkResult> notes = {
      note(0, "The pass key is a phrase that is used to create a passkey.", 4.5),
      note(1, "6. There Is Always Room.", 1.1),
      note(2, "the  pass key is 71112", 0.0),  // case, white space, the period: still a copy
      note(3, "71112", 3.0),                   // too short to tell copying from guessing
      note(4, "[NO INFORMATION] The pass key is 71112.", 5.0),
      note(5, "What the essay is about.", 2.0),  // shares only function words
      // One copied sentence among invented ones (SmolLM2 on a 3K pass-key document).
      note(6, "The pass key is 71112. The passage is about Web 2.0, and the answer is 71112", 3.0),
      note(7, "The pass key is a pass key. The pass key is a pass key that is a key.", 3.0)};
  for (ChunkResult& r : notes) MarkGrounded(&r, chunk, "What is the pass key?");
  EXPECT_FALSE(notes[0].grounded);  // invented
  EXPECT_FALSE(notes[1].grounded);  // copied, but shares no word with the question
  EXPECT_TRUE(notes[2].grounded);
  EXPECT_FALSE(notes[3].grounded);
  EXPECT_FALSE(notes[4].grounded);
  EXPECT_FALSE(notes[5].grounded);
  EXPECT_TRUE(notes[6].grounded);
  EXPECT_FALSE(notes[7].grounded);  // "the pass key is a" is in the chunk, no whole sentence
  SortForReading(&notes);
  std::vector<int> order;
  for (const ChunkResult& r : notes) order.push_back(r.index);
  EXPECT_EQ(order, (std::vector<int>{6, 2, 4, 0, 3, 7, 5, 1}));
}

// 128K pass key #0: three notes were grounded; the needle's scored lowest. More question words
// go first.
TEST(ProtocolTest, GroundedNotesHoldingMoreOfTheQuestionAreReadFirst) {
  const std::string chunk =
      "The key to this mystery is to revisit that question, are they really worth 100 of us? "
      "The pass key is 10297. Remember it. 10297 is the pass key.";
  ChunkResult mystery, needle;
  mystery.index = 46;
  mystery.extracted =
      "The key to this mystery is to revisit that question, are they really worth "
      "100 of us?";
  mystery.confidence = 3.0;
  needle.index = 92;
  needle.extracted = "The pass key is 10297.";
  needle.confidence = 1.0;
  std::vector<ChunkResult> notes = {mystery, needle};
  for (ChunkResult& r : notes) MarkGrounded(&r, chunk, "What is the pass key?");
  EXPECT_TRUE(notes[0].grounded && notes[1].grounded);
  EXPECT_EQ(notes[0].question_words, 1);
  EXPECT_EQ(notes[1].question_words, 2);
  SortForReading(&notes);
  EXPECT_EQ(notes[0].index, 92);
}

TEST(ProtocolTest, ReduceOutput) {
  ReduceOutput r = ParseReduceOutput("Rationale: part 2 found it\nAnswer: 71432");
  EXPECT_TRUE(r.parsed);
  EXPECT_EQ(r.rationale, "part 2 found it");
  EXPECT_EQ(r.answer, "71432");
  ReduceOutput loose = ParseReduceOutput("It is 71432.");
  EXPECT_FALSE(loose.parsed);
  EXPECT_EQ(loose.answer, "It is 71432.");
}

TEST(ProtocolTest, LimitsScaleWithMaxTokens) {
  const GrammarLimits small = LimitsForMaxTokens(120);
  const GrammarLimits big = LimitsForMaxTokens(300);
  EXPECT_LT(small.extracted_chars, big.extracted_chars);
  // The whole output stays within max_tokens at 2.5 characters per token.
  EXPECT_LE((small.extracted_chars + small.rationale_chars + small.answer_chars) * 2 / 5, 100);
  const GrammarLimits tiny = LimitsForMaxTokens(1);
  EXPECT_GE(tiny.answer_chars, 16);
}

// Feeds `text` byte by byte to a matcher over a byte vocabulary; true when the grammar accepts
// every byte and the text is complete.
bool Accepts(const std::string& gbnf, const std::string& text) {
  auto g = grammar::Grammar::Parse(gbnf);
  EXPECT_TRUE(g.ok()) << g.status() << "\n" << gbnf;
  if (!g.ok()) return false;
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.push_back(std::string(1, static_cast<char>(b)));
  bytes.push_back("");  // end of generation
  static const auto index = grammar::TokenIndex::FromStrings(bytes, {256});
  grammar::Matcher m(*g, index);
  for (unsigned char c : text) {
    if (!m.Accept(c).ok()) return false;
  }
  return m.CanEnd();
}

TEST(ProtocolTest, GrammarAcceptsFormattedResults) {
  GrammarLimits lim{20, 20, 10};
  const std::string g = StructuredGrammar(lim);
  ChunkResult r;
  r.extracted = "The key is 71432.";
  r.rationale = "Stated literally.";
  r.answer = "71432";
  for (double score : {0.0, 3.5, 4.9, 5.0}) {
    r.confidence = score;
    EXPECT_TRUE(Accepts(g, FormatChunkResult(r))) << score;
  }
  r.confidence = 5.0;
  std::string over = FormatChunkResult(r);
  over.replace(over.find("5.0"), 3, "5.5");
  EXPECT_FALSE(Accepts(g, over));
  r.answer = std::string(11, 'a');  // over the 10-character bound
  EXPECT_FALSE(Accepts(g, FormatChunkResult(r)));
  r.answer = std::string(10, 'a');
  EXPECT_TRUE(Accepts(g, FormatChunkResult(r)));
  r.answer = " leading space";
  EXPECT_FALSE(Accepts(g, FormatChunkResult(r)));
  EXPECT_FALSE(Accepts(g,
                       "Extracted Information: a\nb\nRationale: c\nAnswer: d\n"
                       "Confidence Score: 1.0"));  // a newline inside a field

  const std::string rg = ReduceGrammar(lim);
  EXPECT_TRUE(Accepts(rg, "Rationale: part 2 says so.\nAnswer: 71432"));
  EXPECT_FALSE(Accepts(rg, "Rationale: x\nAnswer: 71432\nConfidence Score: 5.0"));
  EXPECT_FALSE(Accepts(rg, "Answer: 71432\nRationale: part 2 says so."));
  const std::string first = ReduceGrammar(lim, /*answer_first=*/true);
  EXPECT_TRUE(Accepts(first, "Answer: 71432\nRationale: part 2 says so."));
  EXPECT_FALSE(Accepts(first, "Rationale: part 2 says so.\nAnswer: 71432"));
  const ReduceOutput parsed = ParseReduceOutput("Answer: 71432\nRationale: part 2 says so.");
  EXPECT_TRUE(parsed.parsed);
  EXPECT_EQ(parsed.answer, "71432");
  EXPECT_EQ(parsed.rationale, "part 2 says so.");
  EXPECT_TRUE(ReduceAnswerFirst("retrieval"));
  EXPECT_FALSE(ReduceAnswerFirst("math"));
}

TEST(ProtocolTest, CodesAreTheRunsOfDigits) {
  EXPECT_EQ(Codes("In 2017 the key was 4414277777. Then 2017, 6a8f0e29-6c6d and x9."),
            (std::vector<std::string>{"0", "2017", "29", "4414277777", "6", "8", "9"}));
  EXPECT_TRUE(Codes("no digits here").empty());
}

TEST(ProtocolTest, SentencesSplitAtSentenceEnds) {
  EXPECT_EQ(
      Sentences("Bees  fly.\tThe key is  71432. Remember it! Again? ok", 100),
      (std::vector<std::string>{"Bees fly.", "The key is 71432.", "Remember it!", "Again?", "ok"}));
  // A line ends one too: the needle after a hard-wrapped line is a sentence of its own.
  EXPECT_EQ(Sentences("has become\nThe pass key is 71432.\r\nIt", 100),
            (std::vector<std::string>{"has become", "The pass key is 71432.", "It"}));
  // A sentence over the limit gives its clauses, each cut at a word boundary.
  EXPECT_EQ(Sentences(R"({"a1": "b2", "c3": "d4", "e5": "a much longer value here"})", 16),
            (std::vector<std::string>{R"({"a1": "b2",)", R"("c3": "d4",)", R"("e5": "a much)"}));
  // Repeats once; never an empty sentence.
  EXPECT_EQ(Sentences("Yes. Yes.  . ", 100), (std::vector<std::string>{"Yes.", "."}));
}

TEST(ProtocolTest, CopyGrammarsOnlyLetCopiedDigitsAndSentencesThrough) {
  GrammarLimits lim{40, 30, 20};
  CopySource copy;
  copy.sentences = Sentences("It rained. The sequence of digits is 4414277777. Say \"hi\".", 40);
  copy.codes = Codes("It rained. The sequence of digits is 4414277777. Say \"hi\".");
  const std::string g = StructuredGrammar(lim, &copy);
  auto note = [](const std::string& extracted, const std::string& rationale,
                 const std::string& answer) {
    return "Extracted Information: " + extracted + "\nRationale: " + rationale +
           "\nAnswer: " + answer + "\nConfidence Score: 5.0";
  };
  EXPECT_TRUE(Accepts(g, note("The sequence of digits is 4414277777.", "Copied.", "4414277777")));
  EXPECT_TRUE(Accepts(g, note("Say \"hi\".", "No digits.", "[NO INFORMATION]")));
  EXPECT_TRUE(Accepts(g, note("[NO INFORMATION]", "None here.", "[NO INFORMATION]")));
  // The evidence is a whole sentence of the chunk.
  EXPECT_FALSE(Accepts(g, note("The sequence of digits is 4414277777", "x", "y")));
  EXPECT_FALSE(Accepts(g, note("It rained a lot.", "x", "y")));
  // A dropped, added or invented digit cannot be written, anywhere.
  EXPECT_FALSE(Accepts(g, note("It rained.", "x", "441427777")));
  EXPECT_FALSE(Accepts(g, note("It rained.", "x", "44142777777")));
  EXPECT_FALSE(Accepts(g, note("It rained.", "1234567890", "y")));
  EXPECT_TRUE(Accepts(g, note("It rained.", "is 4414277777.", "y")));
  // Without sentences the evidence is free text under the same digit rule; without codes no
  // digit at all.
  CopySource digits_only;
  digits_only.codes = {"71432"};
  const std::string d = StructuredGrammar(lim, &digits_only);
  EXPECT_TRUE(Accepts(d, note("The key is 71432 I think.", "x", "71432")));
  EXPECT_FALSE(Accepts(d, note("The key is 7143.", "x", "y")));
  const CopySource none;
  EXPECT_FALSE(Accepts(StructuredGrammar(lim, &none), note("About 5 bees.", "x", "y")));
  EXPECT_TRUE(Accepts(StructuredGrammar(lim, &none), note("About five bees.", "x", "y")));
  // The reduce grammar takes the codes too.
  EXPECT_TRUE(Accepts(ReduceGrammar(lim, true, &digits_only), "Answer: 71432\nRationale: x"));
  EXPECT_FALSE(Accepts(ReduceGrammar(lim, true, &digits_only), "Answer: 7143\nRationale: x"));
  // With answers to pick from, the Answer is one of them.
  CopySource pick = digits_only;
  pick.answers = {"71432", "The pass key is 71432."};
  const std::string r = ReduceGrammar(lim, true, &pick);
  EXPECT_TRUE(Accepts(r, "Answer: The pass key is 71432.\nRationale: x"));
  EXPECT_TRUE(Accepts(r, "Answer: [NO INFORMATION]\nRationale: x"));
  EXPECT_FALSE(Accepts(r, "Answer: The pass key is 71432\nRationale: x"));
  EXPECT_FALSE(Accepts(r, "Answer: It is 71432.\nRationale: x"));
  EXPECT_TRUE(Accepts(StructuredGrammar(lim, &pick), note("It is 71432.", "x", "71432")));
  EXPECT_FALSE(Accepts(StructuredGrammar(lim, &pick), note("It is 71432.", "x", "7")));
}

TEST(ProtocolTest, NewInformationIsWhatTheQuestionDidNotSay) {
  const std::string kv =
      "Key: \"0fea816b-d51e-48a8\"\nThe value associated with the specified key is: ";
  EXPECT_TRUE(RepeatsQuestion("0fea816b-d51e", kv));  // part of the key
  EXPECT_TRUE(RepeatsQuestion("The key is 0fea816b-d51e-48a8.", kv));
  EXPECT_FALSE(RepeatsQuestion("2f280183-34b5", kv));
  EXPECT_FALSE(RepeatsQuestion("", kv));
  EXPECT_EQ(NewInformation("\"0fea816b-d51e-48a8\": \"2f280183-34b5-4728\",", kv),
            "2f280183-34b5-4728");
  EXPECT_EQ(NewInformation("The pass key is 71432. Remember it.", "What is the pass key?"),
            "71432. Remember it");
  EXPECT_EQ(NewInformation("The pass key is", "What is the pass key?"), "");
}

}  // namespace
}  // namespace loom::pipelines::mapreduce
