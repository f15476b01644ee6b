#!/bin/bash -eu
# Build tpmdev's fuzz harnesses for ClusterFuzzLite / OSS-Fuzz (atheris project layout).
#
# Each tests/fuzz/oss-fuzz/fuzz_<target>.py is a thin wrapper that calls
# tpmdev.fuzz.<target>.main(); compile_python_fuzzer (the base-builder-python
# helper) bundles it with PyInstaller into $OUT/fuzz_<target>. The pure-Python
# register models are loaded from their source files at run time (the
# harnesses compare them with the compiled ones), so those sources go into the
# bundle as data, and the compiled modules, imported by name, are named to
# PyInstaller. Each target's seed corpus is zipped from tests/fuzz/corpus, and
# its options file sets libFuzzer's max_len as `tpmdev fuzz` does.
cd "$SRC/tpmdev"
pip3 install 'cython>=3.0' 'numpy>=1.24' 'cryptography>=3.4'
TPMDEV_REQUIRE_EXTENSIONS=1 python3 setup.py build_ext --inplace
pip3 install .

for wrapper in tests/fuzz/oss-fuzz/fuzz_*.py; do
  name=$(basename "$wrapper" .py)
  target=${name#fuzz_}
  compile_python_fuzzer "$wrapper" \
    --add-data "tpmdev/hw/core.py:tpmdev/hw" \
    --add-data "tpmdev/hw/tis.py:tpmdev/hw" \
    --add-data "tpmdev/hw/crb.py:tpmdev/hw" \
    --hidden-import tpmdev.hw.core \
    --hidden-import tpmdev.hw.tis \
    --hidden-import tpmdev.hw.crb
  (cd "tests/fuzz/corpus/$target" && zip -q -r "$OUT/${name}_seed_corpus.zip" .)
  # as `tpmdev fuzz` runs them: room for a whole command buffer written through the FIFO
  printf '[libfuzzer]\nmax_len = 8192\n' > "$OUT/${name}.options"
done
