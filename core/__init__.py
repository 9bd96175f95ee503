"""The wire format every process shares (see docs/ARCHITECTURE.md)."""
