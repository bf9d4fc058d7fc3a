"""``python -m proxlib.experiments NAME [options]``: run one seed experiment (see ``--help``)."""

import importlib
import sys

from . import EXPERIMENTS

_MODULES = {"ssl": "ssl", "ast": "ast_reweighting", "cges": "cges"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in EXPERIMENTS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown experiment {argv[0]!r}", file=sys.stderr)
        print(__doc__.strip())
        print(f"experiments: {', '.join(EXPERIMENTS)}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    mod = importlib.import_module(f"proxlib.experiments.{_MODULES[argv[0]]}")
    return mod.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
