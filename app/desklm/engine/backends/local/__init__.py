"""The local backend: a GGUF file run in-process by llama.cpp (load, stream, stop, KV
snapshots, the child-process probe of unknown files). The only place that imports llama_cpp."""
