"""The mitmproxy edge: the addon that turns flows into shadow jobs, and the lean master."""
