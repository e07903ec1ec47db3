"""What a newcomer meets first: the README's example, the license, the install page.

The README's ten-line example runs in a fresh interpreter with warnings shown
(``-W default``): it must print its one result line, the line the README shows
under it, and no ``ConvergenceWarning``. The license file must be the license
that ``pyproject.toml`` declares, and every extra that the install page or the
README names must be one that ``pyproject.toml`` declares (and the reverse).
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INSTALL = ROOT / "docs" / "install.rst"


def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _readme_section(title):
    """The text of the README section ``## title``, up to the next ``## ``."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def _ten_lines():
    """The example's code and the output the README shows under it."""
    blocks = re.findall(
        r"^```(\w*)\n(.*?)^```", _readme_section("In ten lines"), re.S | re.M
    )
    code = [body for lang, body in blocks if lang == "python"]
    shown = [body for lang, body in blocks if lang == ""]
    assert len(code) == 1, "expected one python block under '## In ten lines'"
    assert len(shown) == 1, "expected the example's output in a plain block under it"
    return code[0], shown[0].strip()


def test_readme_example_is_ten_lines():
    code, _ = _ten_lines()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) == 10, "\n".join(lines)


def test_readme_example_prints_one_line_and_no_convergence_warning():
    code, shown = _ten_lines()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "ConvergenceWarning" not in out.stderr + out.stdout, out.stderr
    printed = out.stdout.strip().splitlines()
    assert len(printed) == 1, out.stdout
    assert printed[0] == shown, "the README shows another output than the code prints"
    best = ast.literal_eval(printed[0])
    grid = re.search(r"^grid = (\{.*?\})$", code, re.S | re.M)
    assert grid, "the example's grid is no longer a 'grid = {...}' literal"
    assert set(best) == set(ast.literal_eval(grid.group(1)))


# ---------------------------------------------------------------------- license


def test_license_file_is_the_declared_license():
    license_file = ROOT / "LICENSE"
    assert license_file.is_file()
    text = license_file.read_text(encoding="utf-8")
    declared = _pyproject()["project"]["license"]
    declared = declared if isinstance(declared, str) else declared.get("text")
    assert declared == "BSD-3-Clause"
    assert text.startswith("BSD 3-Clause License\n")
    assert "Copyright (c) 2026, the sknets developers" in text
    # the third clause is what makes it BSD-3 rather than BSD-2
    assert "3. Neither the name of the copyright holder" in text
    assert "THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS" in text
    files = _pyproject()["project"].get("license-files")
    if files is not None:
        assert "LICENSE" in files


# ----------------------------------------------------------------------- extras


def _documented_extras():
    """Extras in the install page's definition list, and every ``[...]`` use."""
    text = INSTALL.read_text(encoding="utf-8")
    section = re.search(
        r"^Optional extras\n-+\n(.*?)(?=^\S[^\n]*\n[-=]+\n|\Z)", text, re.S | re.M
    )
    assert section, "docs/install.rst has no 'Optional extras' section"
    listed = set(re.findall(r"^``([A-Za-z0-9_.-]+)``\n   ", section.group(1), re.M))
    used = set()
    for source in (text, README.read_text(encoding="utf-8")):
        for group in re.findall(r"(?:sknets|\.)\[([A-Za-z0-9_.,\s-]+)\]", source):
            used.update(name.strip() for name in group.split(","))
    return listed, used


def test_install_page_names_only_declared_extras():
    listed, used = _documented_extras()
    declared = set(_pyproject()["project"]["optional-dependencies"])
    assert listed, "no extras found in docs/install.rst"
    assert listed <= declared, f"documented but not in pyproject: {listed - declared}"
    assert used <= declared, f"installed but not in pyproject: {used - declared}"


def test_every_declared_extra_is_documented():
    listed, _ = _documented_extras()
    declared = set(_pyproject()["project"]["optional-dependencies"])
    assert declared <= listed, (
        f"in pyproject but not in docs/install.rst: {declared - listed}"
    )
