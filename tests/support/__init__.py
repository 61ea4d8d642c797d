"""Helpers the tests share (the HTTP fuzzer)."""
