"""``dataledger bench privacy`` (issue 15, docs/BENCHMARKS.md): the cost of the privacy
controls, each against the same work without them in the same run: masking and
watermarking a delivered result (``delivered.py``), the leak trace over the deliveries
(``tracing.py``), event encryption on the append path (``sealing.py``)."""
