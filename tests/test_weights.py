"""Weight resolution: bundled defaults, the cache folder, downloads, offline."""

import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from sknets import PretrainedFeatureExtractor, _weights
from sknets._weights import (
    WEIGHT_SETS,
    WeightSet,
    _download,
    _read_safetensors,
    load_state_dict,
    weights_home,
)
from sknets.modules import SqueezeNet11, resnet20_cifar

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "sknets" / "weights"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """A private cache folder; no mirror and no offline switch from outside."""
    monkeypatch.setenv("SKNETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKNETS_WEIGHTS_URL", raising=False)
    monkeypatch.delenv("SKNETS_OFFLINE", raising=False)


def _images(n=4, size=8, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, (n, size, size, 3), dtype=np.uint8)


def _features(weights, backbone="resnet20_cifar", X=None):
    X = _images() if X is None else X
    ext = PretrainedFeatureExtractor(
        backbone, weights=weights, resize=None, device="cpu", random_state=0
    )
    return ext.fit(X).transform(X)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A local HTTP server over ``folder`` that records the paths asked for."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.requests = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(self.folder))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def served(tmp_path):
    server = _Server(tmp_path / "served")
    server.folder.mkdir()
    yield server
    server.close()


@pytest.fixture
def tiny_set(served, monkeypatch):
    """A test-only weight set: a seeded ResNet-20 served by the local server."""
    torch.manual_seed(1)
    state = {
        k: v.half() if v.is_floating_point() else v
        for k, v in resnet20_cifar().state_dict().items()
    }
    path = served.folder / "tiny-resnet20.th"
    torch.save({"state_dict": state}, path)
    ws = WeightSet(
        name="tiny_resnet20",
        bundled=None,
        filename="tiny-resnet20.th",
        sha256=_sha256(path),
        url="https://example.invalid/weights/",
        license="BSD-3-Clause",
    )
    monkeypatch.setitem(WEIGHT_SETS, ws.name, ws)
    monkeypatch.setenv("SKNETS_WEIGHTS_URL", served.url)
    expected = _features(str(path))
    return ws, path, expected


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).glob("*")) if folder.exists() else []


# ----------------------------------------------------------------- download


def test_first_use_downloads_then_the_cache_answers(tiny_set, served, monkeypatch):
    ws, path, expected = tiny_set
    home = weights_home()
    assert not home.exists()
    renames = []
    replace = os.replace

    def checked_replace(src, dst):  # the whole file, renamed into place
        assert not Path(dst).exists() and Path(src).parent == Path(dst).parent
        assert Path(src).read_bytes() == path.read_bytes()
        renames.append((Path(src).name, Path(dst).name))
        replace(src, dst)

    monkeypatch.setattr(_weights.os, "replace", checked_replace)
    np.testing.assert_array_equal(_features("tiny_resnet20"), expected)
    assert served.requests == ["/tiny-resnet20.th"]
    assert len(renames) == 1 and renames[0][1] == "tiny-resnet20.th"
    assert renames[0][0] != renames[0][1]
    assert _leftovers(home) == ["tiny-resnet20.th"]  # no temporary file left
    assert _sha256(home / "tiny-resnet20.th") == ws.sha256
    # second use: read from the cache, the server is not asked again
    np.testing.assert_array_equal(_features("tiny_resnet20"), expected)
    assert len(served.requests) == 1
    # nor with the offline switch on
    monkeypatch.setenv("SKNETS_OFFLINE", "1")
    np.testing.assert_array_equal(_features("tiny_resnet20"), expected)
    assert len(served.requests) == 1


def test_corrupted_download_is_refused_and_deleted(tiny_set, served):
    ws, path, _ = tiny_set
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256") as info:
        _features("tiny_resnet20")
    assert ws.sha256 in str(info.value) and "deleted" in str(info.value)
    assert _leftovers(weights_home()) == []
    assert len(served.requests) == 1


def test_missing_file_on_the_server(tiny_set, served):
    tiny_set[1].unlink()
    with pytest.raises(ConnectionError, match="404") as info:
        _features("tiny_resnet20")
    assert str(weights_home() / "tiny-resnet20.th") in str(info.value)
    assert _leftovers(weights_home()) == []


def test_server_down_is_a_clear_error(tiny_set, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}/mirror"
    monkeypatch.setenv("SKNETS_WEIGHTS_URL", url)
    with pytest.raises(ConnectionError, match="cannot be reached") as info:
        _features("tiny_resnet20")
    msg = str(info.value)
    assert f"{url}/tiny-resnet20.th" in msg
    assert str(weights_home() / "tiny-resnet20.th") in msg
    assert "SKNETS_WEIGHTS_URL" in msg and "weights=None" in msg
    assert _leftovers(weights_home()) == []


def test_a_silent_server_times_out(tmp_path):
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/w.th"
        with pytest.raises(ConnectionError, match="cannot be reached"):
            _download(url, tmp_path / "w.th", None, timeout=0.3)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_offline_switch_names_the_url_and_folder(tiny_set, served, value, monkeypatch):
    monkeypatch.setenv("SKNETS_OFFLINE", value)
    with pytest.raises(FileNotFoundError, match="SKNETS_OFFLINE") as info:
        _features("tiny_resnet20")
    msg = str(info.value)
    assert served.url + "tiny-resnet20.th" in msg
    assert str(weights_home() / "tiny-resnet20.th") in msg
    assert served.requests == []


def test_offline_switch_off_values(tiny_set, served, monkeypatch):
    monkeypatch.setenv("SKNETS_OFFLINE", "0")
    _features("tiny_resnet20")
    assert len(served.requests) == 1


def test_cache_folder_that_cannot_be_written(tiny_set, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SKNETS_HOME", str(blocker / "sub"))
    with pytest.raises(OSError, match="SKNETS_HOME"):
        _features("tiny_resnet20")


def test_urls_and_mirror(monkeypatch):
    ws = WEIGHT_SETS["resnet56_cifar10"]
    assert ws.download_url() == (
        "https://raw.githubusercontent.com/akamaster/pytorch_resnet_cifar10/"
        "master/pretrained_models/resnet56-4bfd9763.th"
    )
    monkeypatch.setenv("SKNETS_WEIGHTS_URL", "http://mirror.local/w/")
    assert ws.download_url() == "http://mirror.local/w/resnet56-4bfd9763.th"
    assert WEIGHT_SETS["squeezenet1_1_imagenet"].download_url() is None


def test_progress_bar_only_when_asked(served, tmp_path, capsys, monkeypatch):
    (served.folder / "blob.bin").write_bytes(b"x" * 200_000)
    sha = hashlib.sha256(b"x" * 200_000).hexdigest()
    _download(served.url + "blob.bin", tmp_path / "a.bin", sha)  # not a TTY
    assert capsys.readouterr().err == ""
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # the plain fallback
    _download(served.url + "blob.bin", tmp_path / "b.bin", sha, progress=True)
    err = capsys.readouterr().err
    assert "Downloading b.bin" in err and "0.2/0.2 MiB" in err
    assert (tmp_path / "b.bin").read_bytes() == b"x" * 200_000


# ----------------------------------------------------------------- resolution


def test_bundled_defaults_come_first(tmp_path):
    # a different file under the same name in the cache does not win
    home = weights_home()
    home.mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(resnet20_cifar().state_dict(), home / "resnet20_cifar10.th")
    bundled = _features(str(BUNDLED / "resnet20_cifar10.safetensors"))
    np.testing.assert_array_equal(_features("default"), bundled)
    np.testing.assert_array_equal(_features("resnet20_cifar10"), bundled)
    assert not np.allclose(_features(str(home / "resnet20_cifar10.th")), bundled)


def test_cache_comes_before_download(tiny_set, served):
    ws, path, expected = tiny_set
    home = weights_home()
    home.mkdir(parents=True)
    (home / "tiny_resnet20.th").write_bytes(path.read_bytes())
    np.testing.assert_array_equal(_features("tiny_resnet20"), expected)
    assert served.requests == []


def test_unknown_name_says_what_to_do():
    with pytest.raises(FileNotFoundError) as info:
        _features("no_such_weights")
    msg = str(info.value)
    assert str(weights_home() / "no_such_weights.safetensors") in msg
    assert "resnet56_cifar10" in msg and "weights=None" in msg
    assert "convert" not in msg and "never downloads" not in msg


def test_default_resnet56_is_downloaded(served, monkeypatch):
    # the registry entry of resnet56 with the local server as its mirror
    torch.manual_seed(2)
    from sknets.modules import resnet56_cifar

    path = served.folder / "resnet56-4bfd9763.th"
    torch.save({"state_dict": resnet56_cifar().state_dict()}, path)
    ws = WEIGHT_SETS["resnet56_cifar10"]
    monkeypatch.setitem(
        WEIGHT_SETS, ws.name, WeightSet(**{**ws.__dict__, "sha256": _sha256(path)})
    )
    monkeypatch.setenv("SKNETS_WEIGHTS_URL", served.url)
    out = _features("default", backbone="resnet56_cifar")
    np.testing.assert_array_equal(out, _features(str(path), "resnet56_cifar"))
    assert served.requests == ["/resnet56-4bfd9763.th"]


# ----------------------------------------------------------------- bundled files


def test_bundled_files_and_licenses():
    total = 0
    for name in ("squeezenet1_1_imagenet", "resnet20_cifar10"):
        ws = WEIGHT_SETS[name]
        path = _weights._bundled(ws)
        assert path is not None and path.name == f"{name}.safetensors"
        license_text = (path.parent / f"LICENSE_{name}").read_text()
        assert "Permission is hereby granted" in license_text or (
            "Redistribution and use" in license_text
        )
        header = json.loads(
            path.read_bytes()[8:][: int.from_bytes(path.read_bytes()[:8], "little")]
        )
        meta = json.loads(header["__metadata__"]["sknets"])
        assert meta["license"] == ws.license
        dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
        assert dtypes <= {"F16", "I64"}
        total += path.stat().st_size
    assert total < 2.5e6
    SqueezeNet11().load_state_dict(
        load_state_dict(BUNDLED / "squeezenet1_1_imagenet.safetensors")
    )


def test_safetensors_reader_matches_the_package(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    state = {
        "f64": torch.randn(3, 2, dtype=torch.float64),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "i64": torch.arange(4),
        "u8": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
    }
    st.save_file(state, str(tmp_path / "s.safetensors"), metadata={"a": "b"})
    ours = _read_safetensors(tmp_path / "s.safetensors")
    assert ours.keys() == state.keys()
    for k, v in state.items():
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape
        torch.testing.assert_close(ours[k], v)
    for name in ("squeezenet1_1_imagenet", "resnet20_cifar10"):
        path = BUNDLED / f"{name}.safetensors"
        theirs = st.load_file(str(path))
        ours = _read_safetensors(path)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x01\x00", "only 2 bytes"),
        ((10**6).to_bytes(8, "little") + b"{}", "exceeds the file"),
        ((4).to_bytes(8, "little") + b"nope", "not JSON"),
        (
            (60).to_bytes(8, "little")
            + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}'.ljust(60)
            + b"\x00" * 8,
            "do not fit",
        ),
        (
            (60).to_bytes(8, "little")
            + b'{"w":{"dtype":"Q9","shape":[4],"data_offsets":[0,8]}}'.ljust(60),
            "bad entry",
        ),
    ],
)
def test_safetensors_reader_refuses_broken_files(tmp_path, data, match):
    (tmp_path / "bad.safetensors").write_bytes(data)
    with pytest.raises(ValueError, match=match):
        _read_safetensors(tmp_path / "bad.safetensors")


# ----------------------------------------------------------------- fresh machine

_FRESH = """
import sys

class Block:  # a machine without the optional extras
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('safetensors', 'h5py', 'torchvision'):
            raise ImportError(name)

sys.meta_path.insert(0, Block())
import numpy as np
import torch
from sknets import FineTunedClassifier, PretrainedFeatureExtractor

torch.set_num_threads(1)
X = np.random.RandomState(0).rand(4, 3 * 32 * 32)
ext = PretrainedFeatureExtractor(input_shape=(3, 32, 32)).fit(X)
features = ext.transform(X)
assert features.shape == (4, 512) and np.isfinite(features).all()
assert features.max() > 0
res = PretrainedFeatureExtractor("resnet20_cifar", input_shape=(3, 32, 32)).fit(X)
assert res.transform(X).shape == (4, 64)
clf = FineTunedClassifier(input_shape=(3, 32, 32), max_iter=1, head_epochs=1,
                          random_state=0).fit(X, [0, 1, 0, 1])
assert clf.predict(X).shape == (4,)
print("ok", "safetensors" in sys.modules)
"""


def test_defaults_work_on_a_fresh_machine(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SKNETS_HOME", "XDG_CACHE_HOME", "SKNETS_WEIGHTS_URL")
    }
    env.update(HOME=str(tmp_path), SKNETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", _FRESH],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "False"]
    assert list(tmp_path.iterdir()) == []  # nothing cached, nothing written


# ----------------------------------------------------------------- real data


def _convert_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_bundled_weights

    return make_bundled_weights


@pytest.mark.data
def test_bundled_weights_equal_the_converted_originals(shared_data):
    pytest.importorskip("h5py")
    make = _convert_module()
    backbones = {
        "squeezenet1_1_imagenet": "squeezenet1_1",
        "resnet20_cifar10": "resnet20_cifar",
    }
    X = _images(n=4, size=32, seed=1)
    for name, backbone in backbones.items():
        original = make.original_state(name, shared_data)
        bundled = load_state_dict(BUNDLED / f"{name}.safetensors")
        assert bundled.keys() == original.keys()
        for k, v in original.items():
            # exactly the rounded originals, so within float16's precision
            assert torch.equal(bundled[k], make.to_float16({k: v})[k]), k
            torch.testing.assert_close(bundled[k].to(v.dtype), v, rtol=1e-3, atol=1e-4)
        # features: within 1% of the float32 originals (about 0.1-0.2% measured)
        ext = PretrainedFeatureExtractor(backbone, device="cpu").fit(X)
        factory = SqueezeNet11 if backbone == "squeezenet1_1" else resnet20_cifar
        ref = PretrainedFeatureExtractor(factory, device="cpu").fit(X)
        ref.backbone_.load_state_dict(original)
        a, b = ext.transform(X), ref.transform(X)
        rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
        assert rel.max() < 1e-2, (name, rel.max())
        assert not np.allclose(a, _features(None, backbone, X))


@pytest.mark.data
def test_real_resnet56_from_a_local_mirror(shared_data, monkeypatch):
    folder = shared_data / "weights" / "resnet_cifar10"
    server = _Server(folder)
    try:
        monkeypatch.setenv("SKNETS_WEIGHTS_URL", server.url)
        X = _images(n=2, size=32)
        out = _features("default", "resnet56_cifar", X)
        assert server.requests == ["/resnet56-4bfd9763.th"]
        cached = weights_home() / "resnet56-4bfd9763.th"
        assert _sha256(cached) == WEIGHT_SETS["resnet56_cifar10"].sha256
        np.testing.assert_array_equal(
            out, _features(str(folder / cached.name), "resnet56_cifar", X)
        )
        assert len(server.requests) == 1
    finally:
        server.close()
