"""``python -m minippo`` = the ``minippo`` command."""

import sys

from minippo.cli import main

sys.exit(main())
