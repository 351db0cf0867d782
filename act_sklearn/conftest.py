"""Doctest collection of act_sklearn's own modules (pytest runs ``--doctest-modules`` over them).

A module that imports an optional extra at its top cannot be imported without
it, so on a core install pytest does not collect its doctests; the tests of
the same module skip and name the extra (tests/test_torch.py, tests/test_common.py).
On CI (``CI`` set) every module is collected, so a missing extra fails there.
"""

import importlib.util
import os

# module (relative to this folder) -> what it imports at its top, all from one extra
NEEDS_AN_EXTRA = {"models/torch.py": ("torch", "skorch")}

collect_ignore = [
    path
    for path, modules in NEEDS_AN_EXTRA.items()
    if not os.environ.get("CI") and any(importlib.util.find_spec(name) is None for name in modules)
]
