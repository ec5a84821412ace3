"""``python -m dckd`` is the same as the ``dckd`` command."""

import sys

from dckd.cli import main

sys.exit(main())
