"""Export of trained variants (adapter, merged, GGUF), per-format quality, and llama.cpp tooling."""
