"""Cramming recipe: budget BERT MLM pre-training with 2:4 FFNs through sparse_core, then GLUE."""
