"""``python -m stubresolver``."""

import sys

from stubresolver.cli import main

sys.exit(main())
