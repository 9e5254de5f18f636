"""DeiT eval tools: top-1/top-5 of a checkpoint, 2:4 mask verification, dense / semi-structured export."""
