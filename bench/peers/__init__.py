"""Peer webhook receivers that hookd is benchmarked against (see bench/README.md)."""
