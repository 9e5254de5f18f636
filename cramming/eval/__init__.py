"""GLUE fine-tuning, metrics and result tables for checkpoints written by cramming.train."""
