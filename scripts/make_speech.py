#!/usr/bin/env python3
"""Make RTAP's own speech: the demo recording shipped in the package and the test fixtures.

The generator itself is :mod:`rtap_trio.devtools.speechgen` (espeak-ng + sox, byte-for-byte
reproducible); this is its command line, which ``just speech`` runs.

Usage::

    python scripts/make_speech.py                  # demo + tests/fixtures/
    python scripts/make_speech.py --demo           # only the demo recording
    python scripts/make_speech.py --fixtures DIR   # only the fixtures, into DIR
    python scripts/make_speech.py --check          # check the demo and the fixtures
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rtap_trio.devtools import speechgen

REPO = Path(__file__).resolve().parents[1]
#: Where the tests and the bench look for the fixtures (git-ignored).
FIXTURES_DIR = REPO / "tests" / "fixtures"


def main(argv: Sequence[str] | None = None) -> int:
    demo_default = speechgen.demo_path()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help=f"write {demo_default}")
    parser.add_argument("--demo-out", type=Path, help="write the demo here instead")
    parser.add_argument("--fixtures", type=Path, metavar="DIR", help="write the fixtures to DIR")
    parser.add_argument("--force", action="store_true", help="remake fixtures even if current")
    parser.add_argument(
        "--check", action="store_true", help="check wake words and VAD; exit 1 on failure"
    )
    args = parser.parse_args(argv)

    demo_path: Path | None = args.demo_out or (demo_default if args.demo else None)
    fixtures_dir: Path | None = args.fixtures
    if demo_path is None and fixtures_dir is None:
        fixtures_dir = FIXTURES_DIR
        # --check alone checks the shipped demo without rewriting it.
        demo_path = None if args.check else demo_default

    try:
        if demo_path is not None:
            timing = speechgen.generate_demo(demo_path)
            print(f"wrote {demo_path}: {json.dumps(timing)}")
        manifest: Path | None = None
        if fixtures_dir is not None:
            manifest = speechgen.generate_fixtures(fixtures_dir, force=args.force)
            print(f"fixtures: {manifest}")
    except speechgen.SpeechToolMissing as exc:
        print(f"make_speech: {exc}", file=sys.stderr)
        return 1
    if not args.check:
        return 0

    problems = speechgen.check_demo(demo_path or demo_default)
    if manifest is not None:
        problems += speechgen.check_fixtures(manifest)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print("check: " + ("failed" if problems else "all wake words detected, VAD agrees"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
