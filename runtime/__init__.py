"""The runtime: settings, the composition root, serve's background process and the
compute node's supervisor (see docs/ARCHITECTURE.md)."""
