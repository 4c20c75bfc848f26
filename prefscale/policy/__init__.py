"""The policy: chat format, loading and saving model folders, the embedded tiny Llama, GGUF conversion, the base policy."""
