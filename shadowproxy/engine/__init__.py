"""The pure engine: value types, body decoding, diff, noise statistics, record building.

Nothing in here imports mitmproxy or does I/O, so the live proxy, offline replay and the
noise pair all share it.
"""
