"""python -m kernelhook: the same as the kernelhook command."""

import sys

from .cli import main

sys.exit(main())
