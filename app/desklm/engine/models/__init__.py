"""Model files: the GGUF header, the memory-fit estimate, the local catalog, the curated
download list and Hugging Face downloads."""
