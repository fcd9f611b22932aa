"""``python -m nla_lens.cli``: the ``nla-lens`` command."""

import sys

from . import main

sys.exit(main())
