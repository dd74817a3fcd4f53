"""``python -m headstudio.cli``: the same entry point as the ``headstudio`` command."""

import sys

from headstudio.cli import main

sys.exit(main())
