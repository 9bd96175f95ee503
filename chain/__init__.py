"""Verifiable log: RFC 9162 Merkle tree, proofs, checkpoints."""
