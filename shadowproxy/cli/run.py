"""`shadowproxy run` (being written)."""
