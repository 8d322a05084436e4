"""The tokenizer service: MiMo's vocabulary and chat template over gRPC, plus the incremental detokenizer library."""
