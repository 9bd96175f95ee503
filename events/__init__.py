"""The event store and what works on it directly: recorders, group commit, the catalogue,
the NATS outbox publisher."""
