"""The delivered results' bytes, kept off the log (the log records only their SHA-256)."""
