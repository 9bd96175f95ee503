"""Compute nodes: each provider's PySyft datasite, driven from its own Python environment.

Nothing here is imported by the ledger server; see compute_nodes/setup-env.
"""
