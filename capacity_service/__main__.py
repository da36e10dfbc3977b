"""``python -m capacity_service`` is the ``capacity-service`` command."""

import sys

from capacity_service.entrypoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
