"""``python -m avatar3d.cli``."""

import sys

from . import main

sys.exit(main())
