"""Print the lowest declared versions as pip constraints, one ``name==floor`` a line.

The floors are the ``>=`` bounds of ``[project] dependencies`` in
pyproject.toml, the one place where versions are declared. torch is the
exception: it is pinned to the CPU build that CI installs first (see the
comment next to the dependency list), since another torch version would pull
a CUDA build. A dependency without a ``>=`` bound is an error, so that every
declared dependency is tested at its floor.

Usage: python3 .ci/lowest.py [path/to/pyproject.toml]   (Python 3.11+: tomllib)
"""

import re
import sys
from pathlib import Path

import tomllib

CI_TORCH = "2.13.0"

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def floors(pyproject):
    """``(name, floor)`` for each entry of ``[project] dependencies``."""
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    out = []
    for requirement in dependencies:
        name, spec = REQUIREMENT.match(requirement.split(";")[0]).groups()
        bounds = [s.strip() for s in spec.split(",") if s.strip()]
        lower = [b[2:].strip() for b in bounds if b.startswith(">=")]
        if len(lower) != 1:
            raise SystemExit(
                f"{pyproject}: {requirement!r} needs exactly one '>=' floor"
            )
        out.append((name, lower[0]))
    return out


def main(argv):
    pyproject = Path(argv[1]) if len(argv) > 1 else ROOT / "pyproject.toml"
    for name, floor in floors(pyproject):
        if name.lower() == "torch":
            floor = CI_TORCH
        print(f"{name}=={floor}")


if __name__ == "__main__":
    main(sys.argv)
