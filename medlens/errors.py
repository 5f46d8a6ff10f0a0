"""Public home of medlens' typed errors (defined in :mod:`medlens._errors`)."""

from ._errors import *  # noqa: F403
from ._errors import __all__  # noqa: F401
