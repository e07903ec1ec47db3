"""PretrainedFeatureExtractor, FineTunedClassifier, built-in backbones, weights."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from torch import nn

from sknets import FineTunedClassifier, PretrainedFeatureExtractor
from sknets._weights import load_state_dict, weights_home
from sknets.modules import SqueezeNet11, resnet20_cifar, resnet56_cifar

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
WEIGHTS = DATA / "weights"
SQUEEZE_H5 = (
    WEIGHTS
    / "squeezenet1_1_imagenet"
    / "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
)


def _images(n=6, size=8, channels=3, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, (n, size, size, channels), dtype=np.uint8)


def _resnet(**kw):
    params = dict(weights=None, random_state=0, device="cpu", resize=None)
    params.update(kw)
    return PretrainedFeatureExtractor("resnet20_cifar", **params)


class TinyConv(nn.Module):
    """A 2-layer conv net; counts its forward calls (class-wide)."""

    calls = 0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        TinyConv.calls += 1
        return self.fc(self.flat(self.pool(self.act(self.conv(x)))))


# ----------------------------------------------------------------- backbones


def test_backbone_shapes():
    x = torch.zeros(2, 3, 32, 32)
    assert SqueezeNet11()(torch.zeros(2, 3, 48, 48)).shape == (2, 512)
    assert SqueezeNet11(num_classes=7)(torch.zeros(2, 3, 48, 48)).shape == (2, 7)
    assert resnet20_cifar()(x).shape == (2, 10)
    assert resnet20_cifar(num_classes=None)(x).shape == (2, 64)
    n20 = sum(p.numel() for p in resnet20_cifar().parameters())
    n56 = sum(p.numel() for p in resnet56_cifar().parameters())
    assert 0.26e6 < n20 < 0.28e6 and 0.84e6 < n56 < 0.87e6


# ----------------------------------------------------------------- extractor


@pytest.mark.parametrize(
    "layer, width", [(None, 64), ("layer1", 16), ("layer2", 32), ("layer2.0.conv1", 32)]
)
def test_layer_selection_and_shapes(layer, width):
    X = _images()
    ext = _resnet(layer=layer).fit(X)
    out = ext.transform(X)
    assert out.shape == (6, width) and out.dtype == np.float64
    assert ext.n_features_out_ == width
    assert len(ext.get_feature_names_out()) == width


def test_default_layer_is_the_input_of_the_last_module():
    X = _images()
    ext = PretrainedFeatureExtractor(TinyConv(), device="cpu").fit(X)
    assert ext.transform(X).shape == (6, 4)  # pooled features before ``fc``
    with torch.no_grad():
        x = torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255
        net = ext.backbone_
        expected = net.flat(net.pool(net.act(net.conv(x)))).numpy()
    np.testing.assert_allclose(ext.transform(X), expected, rtol=1e-5, atol=1e-6)


def test_unknown_layer_lists_names():
    with pytest.raises(ValueError, match="layer1"):
        _resnet(layer="nope").fit(_images())


def test_values_that_overflow_float32_are_refused():
    X = _images() / 255.0  # float64 in [0, 1]
    huge = X.copy()
    huge[0, 0, 0, 0] = 1e300
    ext = _resnet().fit(X)
    with pytest.raises(ValueError, match="too large for float32"):
        ext.transform(huge)
    with pytest.raises(ValueError, match="too large for float32"):
        _resnet().fit(huge)
    # the classifier refuses them too when it computes in float32
    clf = FineTunedClassifier(
        "resnet20_cifar", weights=None, resize=None, dtype="float32", max_iter=1
    )
    with pytest.raises(ValueError, match="too large for float32"):
        clf.fit(huge, np.arange(len(X)) % 2)


def test_grayscale_and_uint8_input():
    gray = _images(channels=1)[..., 0]  # (n, H, W)
    ext = _resnet().fit(gray)
    assert ext.image_shape_ == (1, 8, 8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    ext_rgb = _resnet().fit(rgb)
    np.testing.assert_allclose(ext.transform(gray), ext_rgb.transform(rgb), atol=1e-5)
    # uint8 pixels are the same as floats in [0, 1]
    as_float = (gray / 255.0).astype(np.float32)
    out32 = ext.transform(as_float)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ext.transform(gray), rtol=1e-4, atol=1e-5)


def test_flat_rows_with_input_shape_and_channels_first():
    X = _images()  # (n, H, W, C)
    chw = X.transpose(0, 3, 1, 2)
    flat = chw.reshape(len(X), -1)
    a = _resnet().fit(X).transform(X)
    b = _resnet(input_shape=(3, 8, 8)).fit(flat).transform(flat)
    c = _resnet().fit(chw).transform(chw)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    with pytest.raises(ValueError, match="input_shape"):
        _resnet().fit(flat)
    with pytest.raises(ValueError, match="holds 75 values"):
        _resnet(input_shape=(3, 5, 5)).fit(flat)


def test_resizing():
    X = _images(size=8)
    ext = _resnet(resize=16).fit(X)
    assert ext.module_.size == (16, 16)
    seen = {}
    hook = ext.backbone_.conv1.register_forward_pre_hook(
        lambda m, a: seen.update(shape=tuple(a[0].shape))
    )
    ext.transform(X)
    hook.remove()
    assert seen["shape"] == (6, 3, 16, 16)
    # 'auto' is the backbone's native size
    assert _resnet(resize="auto").fit(X).module_.size == (32, 32)
    assert not np.allclose(ext.transform(X), _resnet().fit(X).transform(X))


def test_batching_gives_the_same_features():
    X = _images(n=10)
    one = _resnet(batch_size=64).fit(X).transform(X)
    many = _resnet(batch_size=3).fit(X).transform(X)
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-6)


def test_transform_runs_in_eval_and_inference_mode():
    X = _images()
    ext = _resnet().fit(X)
    seen = []
    hook = ext.backbone_.bn1.register_forward_hook(
        lambda m, a, o: seen.append((m.training, torch.is_inference_mode_enabled()))
    )
    ext.transform(X)
    hook.remove()
    assert seen and all(s == (False, True) for s in seen)


def test_missing_weights_error_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("SKNETS_HOME", str(tmp_path))
    assert weights_home() == tmp_path
    X = _images()
    with pytest.raises(FileNotFoundError) as info:
        _resnet(weights="mine").fit(X)
    msg = str(info.value)
    assert str(tmp_path / "mine.safetensors") in msg and "weights=None" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _resnet(weights=str(tmp_path / "nope.pt")).fit(X)


def test_weights_from_path_and_name(tmp_path, monkeypatch):
    X = _images()
    src = resnet20_cifar()
    state = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}
    torch.save(state, tmp_path / "mine.th")
    a = _resnet(weights=str(tmp_path / "mine.th")).fit(X).transform(X)
    monkeypatch.setenv("SKNETS_HOME", str(tmp_path))
    b = _resnet(weights="mine").fit(X).transform(X)
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, _resnet().fit(X).transform(X))
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(src.state_dict(), str(tmp_path / "other.safetensors"))
    c = _resnet(weights="other").fit(X).transform(X)
    np.testing.assert_allclose(a, c)
    # 'default' is the bundled ResNet-20, whatever the cache folder holds
    d = _resnet(weights="default").fit(X).transform(X)
    assert not np.allclose(a, d)


def test_module_backbone_is_not_modified():
    net = TinyConv()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ext = PretrainedFeatureExtractor(net, weights=None, random_state=0).fit(_images())
    assert ext.backbone_ is not net
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_pickle_roundtrip():
    X = _images()
    ext = _resnet(layer="layer2").fit(X)
    again = pickle.loads(pickle.dumps(ext))
    np.testing.assert_array_equal(again.transform(X), ext.transform(X))


def test_set_output_pandas():
    pytest.importorskip("pandas")
    X = _images()
    out = _resnet().set_output(transform="pandas").fit(X).transform(X)
    assert list(out.columns[:2]) == [
        "pretrainedfeatureextractor0",
        "pretrainedfeatureextractor1",
    ]


def test_pipeline_memory_does_not_extract_twice(tmp_path):
    X = _images(n=12).transpose(0, 3, 1, 2).reshape(12, -1)
    y = np.arange(12) % 2
    ext = PretrainedFeatureExtractor(
        TinyConv(), weights=None, input_shape=(3, 8, 8), random_state=0
    )
    pipe = Pipeline(
        [("features", ext), ("clf", LogisticRegression())], memory=str(tmp_path)
    )
    TinyConv.calls = 0
    pipe.fit(X, y)
    first = TinyConv.calls
    assert first > 0
    for C in (0.1, 10.0):
        pipe.set_params(clf__C=C).fit(X, y)
    assert TinyConv.calls == first


def test_torchvision_names_when_available():
    pytest.importorskip("torchvision")
    X = _images(size=16)
    ext = PretrainedFeatureExtractor(
        "resnet18", weights=None, resize=32, random_state=0
    ).fit(X)
    assert ext.transform(X).shape == (6, 512)


def test_unknown_backbone_message():
    with pytest.raises(ValueError, match="resnet20_cifar"):
        PretrainedFeatureExtractor("no_such_net", weights=None).fit(_images())


# ----------------------------------------------------------------- conversion


def _fake_keras_file(path, state):
    """Write ``state`` (a SqueezeNet11 state dict) in the Keras HDF5 layout."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        names = [("conv1", "conv1")] + [
            (f"fire{i}/{k}", f"fire{i}.{o}")
            for i in range(2, 10)
            for k, o in (
                ("squeeze1x1", "squeeze"),
                ("expand1x1", "expand1x1"),
                ("expand3x3", "expand3x3"),
            )
        ]
        for n, (keras, ours) in enumerate(names):
            g = f.create_group(keras)
            w = state[f"features.{ours}.weight"].permute(2, 3, 1, 0).numpy()
            g.create_dataset(f"uniform{n}", data=w)
            g.create_dataset(f"{keras}_b", data=state[f"features.{ours}.bias"].numpy())


def test_squeezenet_conversion_roundtrip(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from convert_squeezenet_keras import convert, save

    torch.manual_seed(0)
    state = SqueezeNet11().state_dict()
    _fake_keras_file(tmp_path / "sq.h5", state)
    converted = convert(tmp_path / "sq.h5")
    assert converted.keys() == state.keys()
    for k in state:
        torch.testing.assert_close(converted[k], state[k])
    path = save(converted, tmp_path / "sq.pt")
    net = SqueezeNet11()
    net.load_state_dict(load_state_dict(path))


@pytest.mark.data
@pytest.mark.skipif(not SQUEEZE_H5.exists(), reason="needs ../shared/data")
def test_real_weights():
    X = _images(n=2, size=32)
    out = PretrainedFeatureExtractor(resize=64, device="cpu").fit(X).transform(X)
    assert out.shape == (2, 512) and np.isfinite(out).all() and out.max() > 0
    # ResNet-20 classifies CIFAR-like input: its own head agrees with features
    ckpt = WEIGHTS / "resnet_cifar10" / "resnet20-12fca82f.th"
    ext = _resnet(weights=str(ckpt)).fit(X)
    feats = ext.transform(X)
    assert feats.shape == (2, 64)
    net = ext.backbone_
    logits = net.linear(torch.from_numpy(feats).float())
    assert logits.shape == (2, 10)


# ----------------------------------------------------------------- fine-tuning


def _ft(**kw):
    params = dict(
        weights=None,
        resize=None,
        head_epochs=2,
        max_iter=4,
        fine_tune_lr=1e-3,
        learning_rate_init=1e-2,
        batch_size=8,
        random_state=0,
        device="cpu",
    )
    params.update(kw)
    return FineTunedClassifier("resnet20_cifar", **params)


def test_fine_tuning_phases():
    X, y = _images(n=16), np.arange(16) % 2
    clf = _ft(max_iter=2, head_epochs=2).fit(X, y)  # phase one only
    phase1 = _ft(max_iter=2, head_epochs=2)
    init = _ft(max_iter=1, head_epochs=1, learning_rate_init=1e-12)
    init.fit(X, y)
    backbone0 = {k: v.clone() for k, v in init.module_.features.state_dict().items()}
    phase1.fit(X, y)
    # frozen in phase one: every backbone parameter and buffer is unchanged
    for k, v in phase1.module_.features.state_dict().items():
        torch.testing.assert_close(v, backbone0[k])
    head1 = init.module_.head.state_dict()
    assert any(
        not torch.equal(v, head1[k])
        for k, v in phase1.module_.head.state_dict().items()
    )
    # both phases: the backbone moves in phase two, history covers both
    full = _ft().fit(X, y)
    assert full.n_iter_ == 4 and len(full.history_) == 4 and len(full.loss_curve_) == 4
    moved = [
        not torch.equal(v, backbone0[k])
        for k, v in full.module_.features.state_dict().items()
        if "weight" in k
    ]
    assert all(moved)
    assert all(p.requires_grad for p in full.module_.parameters())
    assert full.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert clf.predict(X).shape == (16,)


def test_frozen_throughout():
    X, y = _images(n=16), np.arange(16) % 2
    clf = _ft(fine_tune_lr=None).fit(X, y)
    init = _ft(fine_tune_lr=None, max_iter=1, learning_rate_init=1e-12).fit(X, y)
    for k, v in clf.module_.features.state_dict().items():
        torch.testing.assert_close(v, init.module_.features.state_dict()[k])
    assert clf.n_iter_ == 4


def test_fine_tuning_early_stopping_and_scratch():
    X, y = _images(n=30), np.arange(30) % 3
    clf = _ft(early_stopping=True, validation_fraction=0.2, max_iter=3).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_ == 3
    scratch = _ft(head_epochs=0, max_iter=2).fit(X, y)
    assert scratch.n_iter_ == 2
    assert set(scratch.predict(X)) <= {0, 1, 2}
    assert scratch.predict_proba(X).shape == (30, 3)


def test_fine_tuned_pickle_and_grayscale():
    X, y = _images(n=12, channels=1)[..., 0], np.arange(12) % 2
    clf = _ft(max_iter=2, head_epochs=1).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(again.predict_proba(X), clf.predict_proba(X))
