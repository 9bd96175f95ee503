"""The ``dataledger`` command: a module per command group (see ``cli.main``)."""
