"""Data preparation (memory-mapped uint16 token files), tokenizers and the resumable batch loader."""
