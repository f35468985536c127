"""``python -m lib.diagnose``: the command line (see :func:`lib.diagnose.cli.main`)."""
from __future__ import annotations

from lib.diagnose.cli import main

raise SystemExit(main())
