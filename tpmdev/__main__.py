"""``python -m tpmdev`` runs the ``tpmdev`` command."""

import sys

from tpmdev.cli import main

sys.exit(main())
