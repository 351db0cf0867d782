"""``python -m act_sklearn`` runs the ``act-sklearn`` command."""

import sys

from .workflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
