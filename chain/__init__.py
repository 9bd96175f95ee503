"""The pure chain core: RFC 6962 hashing, the Merkle tree (C core and pure-Python twin),
compact ranges, proofs built and verified, signed notes, checkpoints, BLS co-signatures.

Nothing here touches a database, the web or the event store: the server, the compute
node and the offline audit import it alike. Storage and services are in ``anchoring``.
"""
