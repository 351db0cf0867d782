"""Input checks the statistical functions share."""

import numpy as np


def raise_for_items(bad, message):
    """Raise ``ValueError(message(count, first))`` if any item is ``bad`` (a boolean mask)."""
    if bad.any():
        raise ValueError(message(int(bad.sum()), int(np.flatnonzero(bad)[0])))
