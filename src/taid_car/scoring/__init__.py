"""Scoring: HR -> LR (8 bit) -> SR and the per-image scores, the same for every entry point."""
