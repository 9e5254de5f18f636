"""Eval companion: loss/perplexity with 2:4 mask checks, sampling, dense and compressed export."""
