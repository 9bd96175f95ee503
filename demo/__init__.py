"""End-to-end demonstrations of the platform's scenarios (``dataledger demo ...``)."""
