"""``python -m efficientnet``: see :mod:`efficientnet.cli`."""

import sys

from .cli import main

sys.exit(main())
