"""`shadowproxy demo` (being written)."""
