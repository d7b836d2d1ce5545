"""``python -m harness.kinds.bench.peers build ...``: see build.py."""
import sys

from harness.kinds.bench.peers.build import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "build":
        print("usage: python -m harness.kinds.bench.peers build --src DIR --out DIR [--only ...] [--dry-run]",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[1:]))
