"""The chain's storage and services: the tree store, the integrator, the checkpointer,
the witnesses (state, HTTP app, clients) and the offline chain check."""
