"""``python -m serving.cli``: the ``galacto`` command."""

import sys

from serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
