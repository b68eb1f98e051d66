"""Builders for the malformed-input catalogue and the row fuzzer (landing files, policies, lake checks)."""
