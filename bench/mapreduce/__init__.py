"""LLM×MapReduce evaluation tools: InfiniteBench scorer, synthetic task generator, GGUF tokenizer."""
