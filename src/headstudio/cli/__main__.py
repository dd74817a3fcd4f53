"""``python -m headstudio.cli``: the same as the ``headstudio`` command."""

import sys

from headstudio.cli import main

sys.exit(main())
