"""GPT-2 pre-training recipe with 2:4 sparsity (model, train loop, data, eval companion)."""
