"""recbole_lth: sparse embedding tables for RecBole, on one mask core."""
from recbole_lth import compat as _compat

_compat.apply()

from recbole_lth.api import run  # noqa: E402

from recbole_lth.version import VERSION as __version__  # noqa: E402

__all__ = ["run"]
