"""The router: public Inference and Rollout APIs in front of SGLang-protocol workers."""
