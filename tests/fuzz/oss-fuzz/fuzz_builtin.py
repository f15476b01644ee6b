#!/usr/bin/env python3
"""OSS-Fuzz / ClusterFuzzLite entry point: the builtin harness (see tests/fuzz/README.md)."""

import sys

from tpmdev.fuzz.builtin import main

if __name__ == "__main__":
    main(sys.argv)
