"""Shared pieces every gradtx transformation builds on: validation, tree helpers, reductions."""
