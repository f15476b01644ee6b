"""Write the seed corpus of the fuzz harnesses into tests/fuzz/corpus/<target>/.

Usage: ``python tests/fuzz/make_corpus.py`` from the repository root (or
``python make_corpus.py [DIR]``). The seeds are recordings of guest sessions
made by tpmdev's own drivers plus a few hand-written edge cases
(:mod:`tpmdev.fuzz.seeds` says which); the files are in each harness's input
format. Run it again whenever a seed or an input format changes: the tests
check that the committed corpus is what this script writes.
"""

from __future__ import annotations

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the source tree first

from tpmdev.fuzz.seeds import write_corpus  # noqa: E402


def main(directory: str = os.path.join(HERE, "corpus")) -> None:
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    counts = write_corpus(directory)
    for target, n in counts.items():
        sys.stdout.write(f"{target}: {n} seeds\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
