#!/usr/bin/env python3
"""OSS-Fuzz / ClusterFuzzLite entry point: the tis_i2c harness (see tests/fuzz/README.md)."""

import sys

from tpmdev.fuzz.tis_i2c import main

if __name__ == "__main__":
    main(sys.argv)
