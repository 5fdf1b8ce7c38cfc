"""Exceptions shared across cxrlib's layers. This module imports nothing from cxrlib, so any module
(the configs, the cache, the runner modules, the command line) can raise and catch the same classes.

* :class:`UserError`: something the user asked for cannot be done; ``cxr`` prints it as one line
  (``cxr: error: ...``) with exit code 2, not as a traceback.
* :class:`ConfigError`: a parameter is unknown, of the wrong type or out of range (a ``ValueError``,
  so ``cxr`` prints it as one line too). Also importable from :mod:`cxrlib.config`.
* :class:`RunError`: a notebook failed while executing under ``cxr run``/``cxr book``.

They live here, not in :mod:`cxrlib.cli`, because ``python -m cxrlib.cli`` runs that file as the
module ``__main__``: a class defined there would exist twice (``__main__.UserError`` and
``cxrlib.cli.UserError``), and an error raised as one would not be caught as the other.
"""

from __future__ import annotations


class UserError(Exception):
    """An error in what the user asked for: printed as one line, exit code 2."""


class ConfigError(ValueError):
    """A parameter is unknown, of the wrong type, or out of range."""


class RunError(RuntimeError):
    """A notebook failed while executing (message names the notebook, the cell and the error)."""
