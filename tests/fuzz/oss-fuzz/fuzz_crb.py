#!/usr/bin/env python3
"""OSS-Fuzz / ClusterFuzzLite entry point: the crb harness (see tests/fuzz/README.md)."""

import sys

from tpmdev.fuzz.crb import main

if __name__ == "__main__":
    main(sys.argv)
