"""The `sglang` worker: builds and supervises the SGLang server in gRPC mode, and fronts it."""
