"""The local llama.cpp backend: loading, batched decoding, KV snapshots, log capture, probe."""
