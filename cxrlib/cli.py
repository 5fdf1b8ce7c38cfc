"""The ``cxr`` command line. Each module that offers commands registers its own subcommands here:

    cxr data summary|verify|manifests ...   (cxrlib.data.cli)
    cxr run NOTEBOOK ...                    (cxrlib.execution)
    cxr book ...                            (cxrlib.book)
    cxr cache ls|gc ...                     (cxrlib.cache_cli)
    cxr bench ...                           (cxrlib.bench)
    cxr plan [NOTEBOOK ...]                 (cxrlib.plan)

``main(argv)`` is callable from tests; errors the user can fix are printed as one line
(``cxr: error: ...``) with exit code 2, not as a traceback. Their classes live in
:mod:`cxrlib.errors` (not here), so ``python -m cxrlib.cli``, which runs this file as ``__main__``,
catches the same classes the commands raise.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import RunError, UserError

__all__ = ["UserError", "build_parser", "main"]
# (module, function) pairs; each function takes the subparsers object and adds its commands,
# setting ``func`` on its parser(s) to a callable(args) -> int.
_COMMAND_MODULES = (
    ("cxrlib.data.cli", "register"),
    ("cxrlib.execution", "register_cli"),
    ("cxrlib.book", "register_cli"),
    ("cxrlib.cache_cli", "register_cli"),
    ("cxrlib.bench", "register_cli"),
    ("cxrlib.plan", "register_cli"),
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="cxr", description="cxrlib: synthetic chest X-ray study tools")
    parser.add_argument("--version", action="version", version=f"cxrlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name, fn_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # that part of the tool is not built yet
                continue
            raise
        getattr(module, fn_name)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, RunError, FileNotFoundError, ValueError) as e:
        print(f"cxr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
