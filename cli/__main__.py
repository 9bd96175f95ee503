"""``python -m cli``: the ``dataledger`` command."""

from cli.main import main

raise SystemExit(main())
