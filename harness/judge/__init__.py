"""Judging generated art: per-piece scores, the verdict rules and sample I/O (no torch)."""
