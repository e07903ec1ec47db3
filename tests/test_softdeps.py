"""``import sknets`` works without, and does not import, the optional extras."""

import subprocess
import sys

OPTIONAL = [
    "matplotlib",
    "torchvision",
    "timm",
    "h5py",
    "safetensors",
    "dask",
    "distributed",
    "PIL",
    "skops",  # sknets.save of estimator trees imports it when it needs it
    "skl2onnx",
    "onnx",
    "onnxruntime",
    "onnxscript",
]  # tqdm comes with skorch


def test_import_does_not_pull_optional_dependencies():
    code = (
        "import sys, sknets, sknets.modules, sknets.onnx\n"
        f"loaded = [m for m in {OPTIONAL!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_import_works_when_optional_dependencies_are_missing():
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {OPTIONAL!r}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sknets\n"
        "from sknets import MLPClassifier\n"
        "from sknets.onnx import to_torch\n"
        "print(sorted(sknets.__all__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "MLPClassifier" in out.stdout


def test_to_onnx_without_skl2onnx_names_the_extra():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('skl2onnx', 'onnx'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from sknets.onnx import to_onnx\n"
        "try:\n"
        "    to_onnx(None)\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pip install 'sknets[onnx]'" in out.stdout
