# Loom: the two commands.
#   make serve   installs what is missing, builds, fetches the model, starts the default job
#   make test    installs what is missing, builds, fetches the model, runs every test
BUILD ?= build
JOBS ?= $(shell nproc)
MODEL ?= models/SmolLM2-135M-Instruct.Q4_1.gguf
CMAKE_FLAGS ?=

.PHONY: all deps model build serve chat test test-unit bench fuzz clean

all: build

deps:
	tools/setup.sh

model: deps
	tools/fetch_model.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# Until the HTTP server lands, the default job is an interactive chat with the default model.
serve: build model
	$(BUILD)/server/loom chat --model $(MODEL)

chat: serve

test: build model
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -L unit

bench: build model
	.venv/bin/python bench/engine/run.py --build $(BUILD) --model $(MODEL)

clean:
	rm -rf $(BUILD)
