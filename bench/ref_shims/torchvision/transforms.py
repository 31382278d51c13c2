"""Empty: ObSuRF's config.py imports ``transforms`` but never uses it."""
