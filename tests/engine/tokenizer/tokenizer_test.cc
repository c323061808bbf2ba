// Unit tests for the tokenizer: UTF-8 helpers, the pre-tokenizer, BPE merge order and special
// tokens on tiny hand-built vocabularies (no model needed), FromGguf through GgufWriter, and
// round trips / streaming on the real SmolLM2 vocabulary when the model file is present.
#include "engine/tokenizer/tokenizer.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "engine/gguf/gguf.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/real_vocab.h"

namespace loom::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Byte-level encoding of raw bytes (GPT-2 bytes_to_unicode), as token texts are stored.
std::string Enc(std::string_view raw) {
  std::string s;
  for (const char c : raw) AppendUtf8(ByteToCodepoint(static_cast<uint8_t>(c)), &s);
  return s;
}

// What llama.cpp tokenizes instead of `s`: each invalid byte replaced by U+FFFD.
std::string Sanitized(std::string_view s) {
  std::string out;
  for (const uint32_t c : DecodeUtf8Lenient(s)) AppendUtf8(c, &out);
  return out;
}

// A vocabulary of the 256 byte tokens (id = byte) followed by `extra` texts.
TokenizerData ByteVocab(const std::vector<std::string>& extra_raw,
                        const std::vector<std::string>& merges) {
  TokenizerData d;
  d.pre = "gpt2";
  for (int b = 0; b < 256; ++b) d.tokens.push_back(Enc(std::string(1, static_cast<char>(b))));
  for (const std::string& e : extra_raw) d.tokens.push_back(Enc(e));
  d.merges = merges;
  return d;
}

int32_t Id(const Tokenizer& t, std::string_view raw) {
  std::optional<int32_t> id = t.TokenId(Enc(raw));
  EXPECT_TRUE(id.has_value()) << raw;
  return id.value_or(-1);
}

TEST(Unicode, LenientDecodeMatchesLlamaCpp) {
  EXPECT_THAT(DecodeUtf8Lenient("a\xC3\xA9"), ElementsAre('a', 0xE9));
  EXPECT_THAT(DecodeUtf8Lenient("\xFF"), ElementsAre(kReplacementChar));
  EXPECT_THAT(DecodeUtf8Lenient("\xC3("), ElementsAre(kReplacementChar, '('));
  EXPECT_THAT(DecodeUtf8Lenient("\xE2\x82"), ElementsAre(kReplacementChar, kReplacementChar));
  EXPECT_THAT(DecodeUtf8Lenient("\xC0\x80"), ElementsAre(0));           // overlong accepted
  EXPECT_THAT(DecodeUtf8Lenient("\xED\xA0\x80"), ElementsAre(0xD800));  // surrogate accepted
  EXPECT_THAT(DecodeUtf8Lenient("\xF4\x90\x80\x80"),                    // > U+10FFFF
              ElementsAre(kReplacementChar, kReplacementChar, kReplacementChar, kReplacementChar));
  EXPECT_THAT(DecodeUtf8Lenient("\xF0\x9F\x98\x80"), ElementsAre(0x1F600));
}

TEST(Unicode, ByteMappingIsABijection) {
  std::vector<bool> seen(512, false);
  for (int b = 0; b < 256; ++b) {
    const uint32_t c = ByteToCodepoint(static_cast<uint8_t>(b));
    ASSERT_LT(c, 512u);
    EXPECT_FALSE(seen[c]);
    seen[c] = true;
    EXPECT_EQ(CodepointToByte(c), b);
  }
  EXPECT_EQ(ByteToCodepoint(' '), 0x120u);   // 'Ġ'
  EXPECT_EQ(ByteToCodepoint('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(ByteToCodepoint('a'), static_cast<uint32_t>('a'));
  EXPECT_EQ(CodepointToByte(0x4E00), -1);
}

TEST(Unicode, CompleteUtf8Prefix) {
  EXPECT_EQ(CompleteUtf8Prefix("abc"), 3u);
  EXPECT_EQ(CompleteUtf8Prefix("ab\xE2\x82"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("ab\xE2\x82\xAC"), 5u);
  EXPECT_EQ(CompleteUtf8Prefix("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(CompleteUtf8Prefix("\xF0\x9F\x98\x80"), 4u);
  EXPECT_EQ(CompleteUtf8Prefix("a\xFF"), 2u);      // never valid: not held back
  EXPECT_EQ(CompleteUtf8Prefix("a\xED\xA0"), 3u);  // would be a surrogate: not held back
  EXPECT_EQ(CompleteUtf8Prefix("a\x80"), 2u);
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));
}

TEST(PreTokenizer, SmolLmSplitsDigitsThenGpt2) {
  auto pre = PreTokenizer::Create("smollm");
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_THAT((*pre)->Split("I'm 12 "), ElementsAre("I", "'m", " ", "1", "2", " "));
  EXPECT_THAT((*pre)->Split("a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT((*pre)->Split("x\n\ny  "), ElementsAre("x", "\n", "\n", "y", "  "));
  EXPECT_THAT((*pre)->Split("hi!? you're"), ElementsAre("hi", "!?", " you", "'re"));
  EXPECT_THAT((*pre)->Split("abc123def"), ElementsAre("abc", "1", "2", "3", "def"));
  EXPECT_THAT((*pre)->Split("\xFF"
                            "a"),
              ElementsAre("\xEF\xBF\xBD", "a"));  // U+FFFD
  EXPECT_THAT((*pre)->Split(""), IsEmpty());
  // Where PCRE2's Unicode tables differ from llama.cpp's: U+180E is not whitespace, U+1E4F0.. are
  // digits (Unicode 15), U+11F04 is a letter (Unicode 15).
  EXPECT_THAT((*pre)->Split("\xE1\xA0\x8E\xE1\xA0\x8Ex"),
              ElementsAre("\xE1\xA0\x8E\xE1\xA0\x8E", "x"));
  EXPECT_THAT((*pre)->Split("\xF0\x9E\x93\xB0\xF0\x9E\x93\xB1"),
              ElementsAre("\xF0\x9E\x93\xB0", "\xF0\x9E\x93\xB1"));
  EXPECT_THAT((*pre)->Split("a\xF0\x91\xBC\x84"), ElementsAre("a\xF0\x91\xBC\x84"));
  // U+0085 is whitespace for llama.cpp.
  EXPECT_THAT((*pre)->Split("a\xC2\x85\xC2\x85"
                            "b"),
              ElementsAre("a", "\xC2\x85", "\xC2\x85", "b"));
}

TEST(PreTokenizer, UnknownNameFallsBackToDefault) {
  std::string warning;
  auto pre = PreTokenizer::Create("no-such-pre", &warning);
  ASSERT_TRUE(pre.ok());
  EXPECT_THAT(warning, HasSubstr("no-such-pre"));
  EXPECT_EQ((*pre)->spec().regexes.size(), 4u);
  EXPECT_NE(FindPreTokenizerSpec("llama3"), nullptr);
  EXPECT_TRUE(FindPreTokenizerSpec("llama3")->ignore_merges);
  EXPECT_NE(FindPreTokenizerSpec("gpt2"), nullptr);
  EXPECT_NE(FindPreTokenizerSpec("default"), nullptr);
}

TEST(PreTokenizer, HugeInputsDoNotCrash) {
  auto pre = PreTokenizer::Create("smollm");
  ASSERT_TRUE(pre.ok());
  const std::string spaces(200000, ' ');
  std::vector<std::string> words = (*pre)->Split(spaces + "x");
  ASSERT_EQ(words.size(), 2u);
  EXPECT_EQ(words[0].size(), 199999u);
  EXPECT_EQ(words[1], " x");
  std::string mixed;
  for (int i = 0; i < 100000; ++i) mixed += "\xFF\n\t\xC2\x85z9";
  size_t total = 0;
  for (const auto& w : (*pre)->Split(mixed)) total += w.size();
  EXPECT_GT(total, mixed.size());  // every \xFF became 3 bytes of U+FFFD
}

TEST(Bpe, LowestRankMergesFirst) {
  // b c (rank 0) beats a b (rank 1): "abc" -> a + bc.
  auto t = Tokenizer::Create(ByteVocab({"ab", "bc", "abc"}, {"b c", "a b", "ab c"}));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->Encode("abc", false, false), ElementsAre(Id(**t, "a"), Id(**t, "bc")));
  // a b first, then ab c: "abc" -> abc.
  auto u = Tokenizer::Create(ByteVocab({"ab", "bc", "abc"}, {"a b", "b c", "ab c"}));
  ASSERT_TRUE(u.ok());
  EXPECT_THAT((*u)->Encode("abc", false, false), ElementsAre(Id(**u, "abc")));
}

TEST(Bpe, EqualRanksMergeLeftmostFirst) {
  auto t = Tokenizer::Create(ByteVocab({"aa", "aaaa"}, {"a a", "aa aa"}));
  ASSERT_TRUE(t.ok());
  EXPECT_THAT((*t)->Encode("aaa", false, false), ElementsAre(Id(**t, "aa"), Id(**t, "a")));
  EXPECT_THAT((*t)->Encode("aaaaa", false, false), ElementsAre(Id(**t, "aaaa"), Id(**t, "a")));
}

TEST(Bpe, StaleBigramsAreSkipped) {
  auto t = Tokenizer::Create(ByteVocab({"bc", "ab", "cd"}, {"b c", "a b", "c d"}));
  ASSERT_TRUE(t.ok());
  EXPECT_THAT((*t)->Encode("abcd", false, false),
              ElementsAre(Id(**t, "a"), Id(**t, "bc"), Id(**t, "d")));
}

TEST(Bpe, MergeResultOutsideVocabFallsBackToBytes) {
  // "x y" merges into "xy", which is not a token: llama.cpp emits the one-byte tokens.
  auto t = Tokenizer::Create(ByteVocab({}, {"x y"}));
  ASSERT_TRUE(t.ok());
  EXPECT_THAT((*t)->Encode("xy", false, false), ElementsAre('x', 'y'));
  // Byte-level characters that are not one byte long have no one-byte token: dropped.
  EXPECT_THAT((*t)->Encode(" ", false, false), ElementsAre(' '));
}

TEST(Bpe, WordsAreSplitByThePreTokenizerFirst) {
  auto t = Tokenizer::Create(ByteVocab({"a b", " b"}, {"a \xC4\xA0", "\xC4\xA0 b"}));
  ASSERT_TRUE(t.ok());
  // "a b" is never one word for gpt2, so the "a Ġ" merge cannot apply.
  EXPECT_THAT((*t)->Encode("a b", false, false), ElementsAre('a', Id(**t, " b")));
}

TEST(Tokenizer, SpecialTokensPartitionLikeLlamaCpp) {
  TokenizerData d = ByteVocab({"<|s|>", "<u>", "ab", "bcd"}, {"a b"});
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types[256] = 3;  // control
  d.token_types[257] = 4;  // user-defined
  d.token_types[258] = 4;
  d.token_types[259] = 4;
  d.tokens[256] = "<|s|>";  // special texts are stored verbatim
  d.tokens[257] = "<u>";
  auto t = Tokenizer::Create(d);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer& tok = **t;
  // Control tokens only with parse_special; user-defined ones always.
  EXPECT_THAT(tok.Encode("x<|s|>y", false, true), ElementsAre('x', 256, 'y'));
  EXPECT_THAT(tok.Encode("<u>", false, false), ElementsAre(257));
  std::vector<int32_t> plain = tok.Encode("x<|s|>", false, false);
  EXPECT_EQ(plain.size(), 6u);
  // Longest text first, not leftmost: "bcd" is taken before "ab" can match.
  EXPECT_THAT(tok.Encode("abcd", false, false), ElementsAre('a', 259));
  EXPECT_THAT(tok.Encode("<|s|><|s|>", false, true), ElementsAre(256, 256));
  // Rendering.
  EXPECT_EQ(tok.TokenToPiece(256, false), "");
  EXPECT_EQ(tok.TokenToPiece(256, true), "<|s|>");
  EXPECT_EQ(tok.TokenToPiece(257, false), "<u>");
  EXPECT_EQ(tok.Decode(tok.Encode("x<|s|>y", false, true), false), "xy");
  EXPECT_EQ(tok.Decode(tok.Encode("x<|s|>y", false, true), true), "x<|s|>y");
  EXPECT_EQ(tok.TokenToPiece(-1, true), "");
  EXPECT_EQ(tok.TokenToPiece(100000, true), "");
}

TEST(Tokenizer, EndOfGenerationAndBos) {
  TokenizerData d = ByteVocab({"<|im_end|>", "<|endoftext|>", "<s>", "<|im_start|>"}, {});
  d.tokens[256] = "<|im_end|>";
  d.tokens[257] = "<|endoftext|>";
  d.tokens[258] = "<s>";
  d.tokens[259] = "<|im_start|>";
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types[258] = 3;
  d.bos_id = 258;
  d.eos_id = 258;
  d.add_bos = true;
  auto t = Tokenizer::Create(d);
  ASSERT_TRUE(t.ok());
  const Tokenizer& tok = **t;
  // Typed normal in the file, but llama.cpp makes them control and end-of-generation.
  EXPECT_TRUE(tok.IsEog(256));
  EXPECT_TRUE(tok.IsEog(257));
  EXPECT_TRUE(tok.IsEog(258));  // eos
  EXPECT_FALSE(tok.IsEog(259));
  EXPECT_FALSE(tok.IsEog(-1));
  EXPECT_EQ(tok.GetTokenType(256), TokenType::kControl);
  EXPECT_THAT(tok.eog_ids(), ElementsAre(256, 257, 258));
  EXPECT_THAT(tok.Encode("a", true, false), ElementsAre(258, 'a'));
  EXPECT_THAT(tok.Encode("", true, false), ElementsAre(258));
  EXPECT_THAT(tok.Encode("", false, false), IsEmpty());
  EXPECT_EQ(tok.TokenId("<|im_end|>"), 256);
  EXPECT_EQ(tok.TokenId("nope"), std::nullopt);
  EXPECT_EQ(tok.TokenText(258), "<s>");
}

TEST(Tokenizer, ByteTokensAndUnknownPre) {
  TokenizerData d = ByteVocab({}, {});
  d.pre = "mystery";
  d.tokens.push_back("<0x41>");
  d.token_types.assign(d.tokens.size(), 1);
  d.token_types.back() = 6;
  auto t = Tokenizer::Create(d);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->TokenToPiece(256, false), "A");
  EXPECT_THAT((*t)->warning(), HasSubstr("mystery"));
}

TEST(Tokenizer, CreateRejectsBadData) {
  TokenizerData d = ByteVocab({}, {});
  d.model = "llama";
  EXPECT_EQ(Tokenizer::Create(d).status().code(), absl::StatusCode::kUnimplemented);
  d.model = "gpt2";
  d.token_types = {1, 2, 3};
  EXPECT_EQ(Tokenizer::Create(d).status().code(), absl::StatusCode::kInvalidArgument);
  d.token_types.clear();
  d.eos_id = 5000;
  EXPECT_EQ(Tokenizer::Create(d).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::Create(TokenizerData{}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Tokenizer, StreamDecoderHoldsBackIncompleteUtf8) {
  auto t = Tokenizer::Create(ByteVocab({}, {}));  // byte tokens only
  ASSERT_TRUE(t.ok());
  StreamDecoder s(**t, false);
  const std::string euro = "\xE2\x82\xAC";
  EXPECT_EQ(s.Feed(0xE2), "");
  EXPECT_EQ(s.Feed(0x82), "");
  EXPECT_EQ(s.Feed(0xAC), euro);
  EXPECT_EQ(s.Feed('x'), "x");
  EXPECT_EQ(s.Feed(0xF0), "");
  EXPECT_EQ(s.pending_bytes(), 1u);
  EXPECT_EQ(s.Flush(), "\xF0");
  EXPECT_EQ(s.Feed(0xFF), "\xFF");  // can never become valid: passed through
}

TEST(Tokenizer, FromGgufReadsTokenizerMetadata) {
  TokenizerData d = ByteVocab({"ab", "<|im_end|>"}, {"a b"});
  d.tokens[257] = "<|im_end|>";
  gguf::GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", "smollm");
  w.AddStringArray("tokenizer.ggml.tokens", d.tokens);
  std::vector<int32_t> types(d.tokens.size(), 1);
  types[257] = 3;
  w.AddInt32Array("tokenizer.ggml.token_type", types);
  w.AddStringArray("tokenizer.ggml.merges", d.merges);
  w.AddUint32("tokenizer.ggml.eos_token_id", 257);
  w.AddUint32("tokenizer.ggml.bos_token_id", 99999);  // out of range: llama.cpp's default (11)
  w.AddBool("tokenizer.ggml.add_bos_token", false);
  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto file = gguf::GgufFile::FromBuffer(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->eos_id(), 257);
  EXPECT_EQ((*t)->bos_id(), 11);
  EXPECT_EQ((*t)->pre(), "smollm");
  EXPECT_TRUE((*t)->warning().empty());
  EXPECT_THAT((*t)->Encode("ab<|im_end|>", true, true), ElementsAre(256, 257));

  gguf::GgufWriter spm;
  spm.AddString("tokenizer.ggml.model", "llama");
  spm.AddStringArray("tokenizer.ggml.tokens", {"a"});
  auto spm_bytes = spm.Serialize();
  ASSERT_TRUE(spm_bytes.ok());
  auto spm_file = gguf::GgufFile::FromBuffer(*spm_bytes);
  ASSERT_TRUE(spm_file.ok());
  EXPECT_EQ(Tokenizer::FromGguf(**spm_file).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(Tokenizer, ConcurrentEncodeSharesTheWordCache) {
  auto t = Tokenizer::Create(ByteVocab({"ab", "abc", " ab"}, {"a b", "ab c", "\xC4\xA0 ab"}));
  ASSERT_TRUE(t.ok());
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back("abc ab x" + std::to_string(i) + " abcab");
  std::vector<std::vector<int32_t>> want;
  for (const auto& s : texts) want.push_back((*t)->Encode(s, false, false));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep) {
        for (size_t i = k; i < texts.size(); i += 1 + k) {
          if ((*t)->Encode(texts[i], false, false) != want[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// ---- Real vocabulary (skipped without the model file) ----

class RealVocab : public RealVocabTest {};

std::string RandomString(std::mt19937& rng) {
  static const std::vector<std::string> kPieces = {"a",
                                                   "Z",
                                                   "the",
                                                   " ",
                                                   "  ",
                                                   "\n",
                                                   "\r\n",
                                                   "\t",
                                                   "'s",
                                                   "'ll",
                                                   "9",
                                                   "42",
                                                   ".",
                                                   "!?",
                                                   "<|im_",
                                                   "\xC3\xA9",
                                                   "\xE4\xBD\xA0\xE5\xA5\xBD",
                                                   "\xF0\x9F\xA6\x99",
                                                   "\xF0\x9F\x91\xA8\xE2\x80\x8D",
                                                   "e\xCC\x81",
                                                   "\xD9\x85\xD8\xB1",
                                                   "\xC2\xA0",
                                                   "\xC2\x85",
                                                   "\xE3\x80\x80",
                                                   std::string(1, '\0'),
                                                   "\xEF\xBF\xBD",
                                                   std::string(50, ' '),
                                                   "\xE2\x91\xA0",
                                                   "\xC2\xB2"};
  std::uniform_int_distribution<int> len(0, 24), kind(0, 9), byte(0, 255);
  std::string s;
  for (int i = len(rng); i > 0; --i) {
    if (kind(rng) == 0) {
      s.push_back(static_cast<char>(byte(rng)));  // arbitrary, often invalid, bytes
    } else {
      s += kPieces[std::uniform_int_distribution<size_t>(0, kPieces.size() - 1)(rng)];
    }
  }
  return s;
}

// What Decode(Encode(s)) gives, as in llama.cpp: invalid bytes become U+FFFD, and bytes whose
// byte-level character is not a token (21 in SmolLM2: 0x04, 0x06, 0xC0, 0xFF, ...) are dropped.
std::string Expected(const Tokenizer& tok, std::string_view s) {
  std::string out;
  for (const char c : Sanitized(s)) {
    if (tok.TokenId(Enc(std::string(1, c))).has_value()) out.push_back(c);
  }
  return out;
}

TEST_F(RealVocab, RoundTripsArbitraryBytes) {
  int unrepresentable = 0;
  for (int b = 0; b < 256; ++b) {
    unrepresentable += !tok_->TokenId(Enc(std::string(1, static_cast<char>(b)))).has_value();
  }
  EXPECT_EQ(unrepresentable, 21);
  std::mt19937 rng(1234);
  int invalid = 0, exact = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string s = RandomString(rng);
    const std::vector<int32_t> ids = tok_->Encode(s, false, false);
    const std::string expect = Expected(*tok_, s);
    invalid += !IsValidUtf8(s);
    exact += expect == s;
    ASSERT_EQ(tok_->Decode(ids, true), expect) << "case " << i;
    // With special parsing the control token texts come back when rendered.
    ASSERT_EQ(tok_->Decode(tok_->Encode(s, false, true), true), expect) << "case " << i;
  }
  EXPECT_GT(invalid, 100);
  EXPECT_GT(exact, 1000);  // valid UTF-8 of representable bytes round-trips exactly
  const std::string text =
      "Hello, w\xC3\xB6rld! \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\xA6\x99 e\xCC\x81 \xD9\x85\xD8\xB1"
      "\n\n\t  x = f(1234) + 'y';   ";
  EXPECT_EQ(tok_->Decode(tok_->Encode(text, false, false), false), text);
  const std::string long_ws = std::string(5000, ' ') + std::string(3000, '\n') + "x\t\t";
  EXPECT_EQ(tok_->Decode(tok_->Encode(long_ws, false, false), false), long_ws);
}

TEST_F(RealVocab, StreamDecoderEmitsOnlyCompleteUtf8) {
  std::mt19937 rng(99);
  for (int i = 0; i < 1000; ++i) {
    std::string s = Sanitized(RandomString(rng));
    const std::vector<int32_t> ids = tok_->Encode(s, false, true);
    StreamDecoder stream(*tok_, true);
    std::string all;
    for (const int32_t id : ids) {
      const std::string part = stream.Feed(id);
      if (IsValidUtf8(s)) {
        ASSERT_TRUE(IsValidUtf8(part)) << "case " << i;
      }
      all += part;
    }
    all += stream.Flush();
    ASSERT_EQ(all, tok_->Decode(ids, true)) << "case " << i;
  }
}

TEST_F(RealVocab, SpecialTokensAndMetadata) {
  EXPECT_EQ(tok_->vocab_size(), 49152);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_FALSE(tok_->add_bos());
  EXPECT_EQ(tok_->TokenId("<|im_start|>"), 1);
  EXPECT_TRUE(tok_->IsEog(2));
  EXPECT_THAT(tok_->Encode("<|im_start|>user", true, true), ElementsAre(1, 4093));
  EXPECT_EQ(tok_->TokenToPiece(1, false), "");
  EXPECT_EQ(tok_->TokenToPiece(1, true), "<|im_start|>");
}

}  // namespace
}  // namespace loom::tokenizer
