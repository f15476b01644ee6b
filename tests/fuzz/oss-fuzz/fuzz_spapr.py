#!/usr/bin/env python3
"""OSS-Fuzz / ClusterFuzzLite entry point: the spapr harness (see tests/fuzz/README.md)."""

import sys

from tpmdev.fuzz.spapr import main

if __name__ == "__main__":
    main(sys.argv)
