"""`shadowproxy rules` (being written)."""
