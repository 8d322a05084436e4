"""Text handling several services share (grpc-free): model-directory facts, tokenizer artifacts, chat templates, incremental detokenizing, the reasoning split."""
