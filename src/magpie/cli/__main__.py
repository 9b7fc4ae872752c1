"""``python -m magpie.cli``: the same as the ``magpie`` command."""

from magpie.cli import main

raise SystemExit(main())
