# Loom: the two commands.
#   make serve   installs what is missing, builds, fetches the model, starts the default job
#   make test    installs what is missing, builds, fetches the model, runs every test
BUILD ?= build
JOBS ?= $(shell nproc)
MODEL ?= models/SmolLM2-135M-Instruct.Q4_1.gguf
CMAKE_FLAGS ?=

.PHONY: all deps model build serve chat test test-unit bench bench-grammar bench-duo bench-niah bench-attention fuzz format clean

all: build

deps:
	tools/setup.sh

model: deps
	tools/fetch_model.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# The default job: the OpenAI-compatible HTTP server on the default model, http://127.0.0.1:8080/v1.
serve: build model
	$(BUILD)/server/loom serve --model $(MODEL)

chat: build model
	$(BUILD)/server/loom chat --model $(MODEL)

test: build model
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -L unit

bench: build model
	.venv/bin/python bench/engine/run.py --build $(BUILD) --model $(MODEL)

# Structured output: JSON-schema-constrained vs unconstrained decode, MaskLogits latency.
bench-grammar: build model
	$(BUILD)/bench/grammar/bench_grammar --model $(MODEL) --out bench/results/grammar.json

# DuoAttention: KV bytes and decode tok/s at the full context, full vs 50% streaming; passkey check.
bench-duo: build model
	$(BUILD)/bench/duo_memory/bench_duo_memory --model $(MODEL) --threads 2 --steps 64 \
	  --passkey 8 --out bench/results/duo_memory.json

# DuoAttention: Needle in a Haystack, full attention vs 25/50/75% streaming heads, 1K-8K tokens x
# 10 depths (about an hour on 2 free cores; NIAH_FLAGS=--quick for a few minutes).
NIAH_FLAGS ?=
bench-niah: build model
	.venv/bin/python bench/niah/run.py --build $(BUILD) --model $(MODEL) --threads 2 $(NIAH_FLAGS)

bench-attention: build
	$(BUILD)/bench/attention/bench_attention --out bench/results/attention.json

# libFuzzer on the GGUF reader for FUZZ_SECONDS (clang; see fuzz/CMakeLists.txt).
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DLOOM_FUZZ=ON -DLOOM_BUILD_TESTS=OFF -DLOOM_BUILD_BENCH=OFF
	cmake --build build-fuzz --target gguf_fuzz
	mkdir -p build-fuzz/corpus-new
	build-fuzz/fuzz/gguf_fuzz -max_total_time=$(FUZZ_SECONDS) -dict=fuzz/gguf.dict build-fuzz/corpus-new build-fuzz/fuzz/corpus

# Rewrites the C++ and CUDA sources as .clang-format says (CTest's clang_format checks it).
format: deps
	tools/check_format.sh --fix

clean:
	rm -rf $(BUILD)
