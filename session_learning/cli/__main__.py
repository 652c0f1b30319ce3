"""``python -m session_learning.cli``: the ``session-learning`` command."""

import sys

from session_learning.cli import main

sys.exit(main())
