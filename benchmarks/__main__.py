"""``python -m benchmarks SUITE [--quick] [--json PATH] [--repeats N]``.

See :mod:`benchmarks.harness` for how suites are written and measured; ``regency bench``
calls :func:`main` with its own arguments.
"""

from __future__ import annotations

import sys

from benchmarks.harness import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
