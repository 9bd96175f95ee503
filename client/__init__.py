"""The one HTTP driver of the platform: what the demo, the benchmarks, the compute node and the
e2e and compute tests send to a running server (standard library and httpx only, so that it imports in the
compute node's environment too)."""
