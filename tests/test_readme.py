"""The README's Use section runs as shown: its Python blocks, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_use_section_examples_run() -> None:
    text = README.read_text()
    use = text[text.index("## Use") : text.index("\n## ", text.index("## Use") + 1)]
    blocks = re.findall(r"```python\n(.*?)```", use, re.S)
    assert len(blocks) >= 5  # TIS, TISSysbus, CRB, SPAPR, TISI2C
    namespace: dict[str, object] = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    assert namespace["response"] == bytes.fromhex("80010000000a00000000")
