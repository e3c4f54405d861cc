"""``python -m meshclosure``: the ``meshclosure`` command (see :mod:`meshclosure.cli`)."""
import sys

from .cli import main

sys.exit(main())
