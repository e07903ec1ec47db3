"""One engine for one network or a stack: penalty, epoch loop, epoch end, data."""

import math
import pickle
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sknets import MLPClassifier, MLPRegressor
from sknets._data import MemberData
from sknets._engine import SkorchNet
from sknets._epochs import StoppingState, end_epoch
from sknets._losses import WeightedLoss
from sknets._members import MemberRun, MemberSpec
from sknets._plan import StoppingRules
from sknets.modules import MLPModule, StackedMLP

pytestmark = pytest.mark.usefixtures("quiet_one_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(30, 5))
    y = np.arange(30) % 3
    return X, y


# --------------------------------------------------------------------------- penalty


def _net(module, alpha, l1_ratio):
    net = SkorchNet(
        module=module, criterion=WeightedLoss, alpha=alpha, l1_ratio=l1_ratio
    )
    return net.initialize()


def _members(n):
    torch.manual_seed(0)
    return [MLPModule(4, (6, 3), 2) for _ in range(n)]


def _by_hand(module, alpha, l1_ratio, n):
    weights = [m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)]
    l2 = sum(float((W * W).sum()) for W in weights)
    l1 = sum(float(W.abs().sum()) for W in weights)
    return (alpha / 2 * (1 - l1_ratio) * l2 + alpha * l1_ratio * l1) / n


@pytest.mark.parametrize(
    "alpha, l1_ratio",
    [([0.1, 0.2, 0.3], [0.0, 0.5, 1.0]), ([0.0, 0.2, 0.3], [0.5, 1.0, 0.0])],
    ids=["all_penalized", "one_alpha_zero"],
)
def test_stacked_penalty_is_each_members_own(alpha, l1_ratio):
    members = _members(3)
    stacked = _net(StackedMLP(members, "relu", [[0.0, 0.0]] * 3), alpha, l1_ratio)
    n = torch.tensor([7.0, 12.0, 3.0])
    got = stacked.penalty(n)
    assert got.shape == (3,)
    for m, member in enumerate(members):
        single = _net(member, alpha[m], l1_ratio[m])
        own = torch.as_tensor(single.penalty(float(n[m])), dtype=got.dtype)
        torch.testing.assert_close(got[m], own)
        expected = _by_hand(member, alpha[m], l1_ratio[m], float(n[m]))
        torch.testing.assert_close(own, torch.tensor(expected, dtype=got.dtype))
        assert (expected > 0) == (alpha[m] > 0)


def test_stacked_member_without_rows_has_no_penalty():
    members = _members(3)
    stacked = _net(
        StackedMLP(members, "tanh", [[0.0, 0.0]] * 3), [0.1, 0.2, 0.3], [0, 0.5, 1]
    )
    got = stacked.penalty(torch.tensor([5.0, 0.0, 2.0]))
    assert got[1].item() == 0.0
    assert got[0].item() > 0 and got[2].item() > 0
    single = _net(members[2], 0.3, 1.0)
    torch.testing.assert_close(got[2], torch.as_tensor(single.penalty(2.0)))
    stack = StackedMLP(members, "relu", [[0.0, 0.0]] * 3)
    unpenalized = _net(stack, [0.0] * 3, [0.5] * 3)
    n = torch.tensor([5.0, 0.0, 2.0])
    torch.testing.assert_close(unpenalized.penalty(n), torch.zeros(3))


def test_penalty_is_over_weights_not_biases():
    (member,) = _members(1)
    before = _net(member, 0.2, 0.5).penalty(4.0)
    with torch.no_grad():
        for layer in member.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.bias.add_(10.0)
    assert float(_net(member, 0.2, 0.5).penalty(4.0)) == pytest.approx(float(before))
    stacked = _net(StackedMLP([member], "relu", [[0.0, 0.0]]), [0.2], [0.5])
    torch.testing.assert_close(
        stacked.penalty(torch.tensor([4.0]))[0], torch.as_tensor(before)
    )


# --------------------------------------------------------------------------- epochs


class BatchCounter(Callback):
    def initialize(self):
        self.begins, self.ends, self.losses = [], [], []
        return self

    def on_batch_begin(self, net, training=False, **kwargs):
        self.begins.append(training)

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        self.ends.append(training)
        if training:
            self.losses.append(float(loss))


FAST = dict(
    hidden_layer_sizes=(4,),
    batch_size=7,
    max_iter=3,
    tol=0.0,
    n_iter_no_change=1000,
    random_state=0,
    device="cpu",
)


def test_user_callback_sees_every_batch_and_history_has_them(data):
    X, y = data
    clf = MLPClassifier(callbacks=[("count", BatchCounter())], **FAST).fit(X, y)
    counter = dict(clf.net_.callbacks_)["count"]
    n_batches = math.ceil(len(X) / 7)
    assert clf.n_iter_ == 3
    assert counter.begins == counter.ends == [True] * (3 * n_batches)
    history = clf.net_.history
    losses = history[:, "batches", :, "train_loss"]
    sizes = history[:, "batches", :, "train_batch_size"]
    assert [len(epoch) for epoch in losses] == [n_batches] * 3
    assert sizes == [[7, 7, 7, 7, 2]] * 3
    assert history[:, "train_batch_count"] == [n_batches] * 3
    np.testing.assert_allclose(np.ravel(losses), counter.losses, rtol=1e-12)
    for epoch, row in zip(losses, history, strict=True):
        mean = np.average(epoch, weights=[7, 7, 7, 7, 2])
        assert row["train_loss"] == pytest.approx(mean, rel=1e-12)


def _member_run(X, y, n_rows=(30, 20), epochs=3):
    estimators = [
        MLPClassifier(**{**FAST, "batch_size": 10, "alpha": a}) for a in (1e-4, 1e-2)
    ]
    preps = [
        (est, est._prepare(X[:n], y[:n], None, False))
        for est, n in zip(estimators, n_rows, strict=True)
    ]
    specs = [
        MemberSpec(p.plan, np.arange(n), None, (epochs,))
        for (_, p), n in zip(preps, n_rows, strict=True)
    ]
    full = preps[0][1]
    module = preps[0][0]._stack(preps)
    return MemberRun(module, specs, full.X, full.target)


def test_stacked_run_records_epochs_but_no_batches(data):
    X, y = data
    run = _member_run(X, y).advance()
    history = run.net.history
    assert len(history) == 3
    assert history[:, "batches"] == [[], [], []]
    assert history[:, "train_batch_count"] == [3, 3, 3]  # the longest member's
    for m in range(2):
        state = run.results[m][3]
        assert state.epochs_run == 3 and state.stop_reason is None
        assert all(np.isfinite(r["train_loss"]) for r in state.history)


def test_stacked_run_notifies_a_callback_that_acts_on_batches(data):
    X, y = data
    run = _member_run(X, y)
    run.net.callbacks = [("members", run.monitor), ("count", BatchCounter())]
    run.net.initialize_callbacks()
    run.advance()
    counter = dict(run.net.callbacks_)["count"]
    assert counter.begins == counter.ends == [True] * (3 * 3)
    batches = [b for epoch in run.net.history[:, "batches"] for b in epoch]
    assert not any("train_loss" in b or "train_batch_size" in b for b in batches)
    assert all(r[3].epochs_run == 3 for r in run.results.values())


# --------------------------------------------------------------------------- end_epoch


def _rules(**kw):
    params = dict(
        tol=1e-4,
        n_iter_no_change=2,
        early_stopping=False,
        score="accuracy",
        lr_schedule="constant",
        power_t=0.5,
        stochastic=True,
    )
    return StoppingRules(**{**params, **kw})


def _state(lr=0.1):
    return StoppingState(learning_rate=lr, base_learning_rate=lr)


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_diverged_epoch_skips_validation_and_counts_rows(loss):
    calls = []
    state = _state()
    end = end_epoch(_rules(), state, 12, loss, lambda: calls.append(1) or (0.0, 1.0))
    assert end.diverged and end.valid is None and not end.stop
    assert calls == []
    assert state.t == 12
    assert state.best_loss == np.inf and state.no_improvement_count == 0


def test_finite_epoch_validates_once():
    calls = []
    state = _state()
    end = end_epoch(_rules(), state, 12, 1.0, lambda: calls.append(1) or (0.5, 0.9))
    assert not end.diverged and end.valid == (0.5, 0.9) and calls == [1]
    assert state.t == 12 and state.best_loss == 1.0


def test_non_stochastic_rules_leave_state_alone():
    rules = _rules(stochastic=False, lr_schedule="adaptive", n_iter_no_change=0)
    state = _state(lr=1.0)
    ends = [end_epoch(rules, state, 5, 2.0, lambda: (0.3, 0.7)) for _ in range(4)]
    assert all(e.valid == (0.3, 0.7) for e in ends)
    assert not any(e.stop or e.lr_changed or e.improved or e.message for e in ends)
    assert state.learning_rate == 1.0 and state.no_improvement_count == 0
    assert state.best_loss == np.inf and state.t == 20
    # the same epochs under stochastic rules do change the state
    stochastic = _state(lr=1.0)
    for _ in range(4):
        end_epoch(replace(rules, stochastic=True), stochastic, 5, 2.0)
    assert stochastic.learning_rate < 1.0 and stochastic.best_loss == 2.0


def test_adaptive_divides_lr_by_five_after_n_iter_no_change_plus_one():
    rules = _rules(lr_schedule="adaptive", n_iter_no_change=2)
    state = _state(lr=0.1)
    ends = [end_epoch(rules, state, 10, 1.0) for _ in range(1 + 3 + 3)]
    # epoch 1 improves on inf; then 3 (= n_iter_no_change + 1) without improving
    assert [e.lr_changed for e in ends] == [False, False, False, True] + [
        False,
        False,
        True,
    ]
    assert not any(e.stop for e in ends)
    assert state.learning_rate == pytest.approx(0.1 / 25)
    assert "Setting learning rate" in ends[3].message
    assert state.no_improvement_count == 0 and state.t == 70


def test_adaptive_stops_at_the_lr_floor_and_constant_stops():
    state = _state(lr=1e-6)
    rules = _rules(lr_schedule="adaptive", n_iter_no_change=1)
    ends = [end_epoch(rules, state, 10, 1.0) for _ in range(3)]
    assert [e.stop for e in ends] == [False, False, True]
    assert not any(e.lr_changed for e in ends) and state.learning_rate == 1e-6
    constant = _state(lr=0.1)
    rules = _rules(lr_schedule="constant", n_iter_no_change=1)
    ends = [end_epoch(rules, constant, 10, 1.0) for _ in range(3)]
    assert [e.stop for e in ends] == [False, False, True]
    assert "Stopping" in ends[2].message and constant.learning_rate == 0.1


# --------------------------------------------------------------------------- MemberData


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_member_data_take_equals_a_hand_gather(weighted):
    rng = np.random.RandomState(1)
    X = rng.normal(size=(9, 3))
    y = rng.randint(0, 4, 9)
    sw = rng.uniform(0.5, 2.0, 9) if weighted else None
    ds = MemberData(
        X, y, sw, rows=[range(9), range(5)], device="cpu", dtype=torch.float64
    )
    index = torch.tensor([[8, 0, 3, 3], [4, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float64)
    Xb, (yb, wb, counts) = ds.take(index, mask)
    rows = index.numpy()
    assert Xb.shape == (2, 4, 3) and yb.shape == (2, 4) and wb.shape == (2, 4)
    np.testing.assert_array_equal(Xb.numpy(), X[rows])
    np.testing.assert_array_equal(yb.numpy(), y[rows])
    expected_w = mask.numpy() * (sw[rows] if weighted else 1.0)
    np.testing.assert_array_equal(wb.numpy(), expected_w)
    np.testing.assert_array_equal(counts.numpy(), [4.0, 2.0])
    assert (wb[1, 2:] == 0).all()


def test_member_data_take_casts_to_the_dtype():
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.arange(6)
    ds = MemberData(X, y, rows=[range(6)], device="cpu", dtype=torch.float32)
    index = torch.tensor([[5, 2]])
    Xb, (yb, wb, counts) = ds.take(index, torch.ones((1, 2)))
    assert Xb.dtype == torch.float32
    torch.testing.assert_close(Xb[0], torch.tensor([[10.0, 11.0], [4.0, 5.0]]))
    assert yb.tolist() == [[5, 2]] and wb.tolist() == [[1.0, 1.0]]
    assert counts.tolist() == [2.0]


# --------------------------------------------------------------------------- plans


def test_plan_pickles_to_an_equal_read_only_plan(data):
    X, _ = data
    reg = MLPRegressor(compile={"mode": "default"}, **FAST)
    plan = reg._make_plan(len(X), incremental=False, first_pass=True, x_dtype=X.dtype)
    loaded = pickle.loads(pickle.dumps(plan))
    assert loaded == plan and loaded is not plan
    for mapping in (loaded.optimizer_kwargs, loaded.forward_compile):
        assert isinstance(mapping, MappingProxyType)
    assert dict(loaded.optimizer_kwargs) == dict(plan.optimizer_kwargs)
    assert dict(loaded.forward_compile) == {"mode": "default"}
    with pytest.raises(TypeError):
        loaded.optimizer_kwargs["eps"] = 1.0
    with pytest.raises(TypeError):
        loaded.forward_compile["mode"] = "max-autotune"


def test_plan_with_validation_rows_pickles_them_read_only(data):
    X, _ = data
    reg = MLPRegressor(early_stopping=True, validation_fraction=0.2, **FAST)
    plan = reg._make_plan(len(X), incremental=False, first_pass=True, x_dtype=X.dtype)
    loaded = pickle.loads(pickle.dumps(plan))
    for name in ("train_rows", "valid_rows"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(plan, name))
        assert not getattr(loaded, name).flags.writeable
    assert loaded.stopping == plan.stopping and loaded.phases == plan.phases
    assert isinstance(loaded.optimizer_kwargs, MappingProxyType)


def test_a_member_loads_its_own_networks_state():
    members = _members(3)
    stack = StackedMLP(members, "relu", [[0.0, 0.0]] * 3)
    X = torch.randn(
        3, 5, members[0].layers[0].in_features, dtype=members[0].layers[0].weight.dtype
    )
    before = stack(X)
    # member 1 takes member 2's weights: its outputs become member 2's
    stack.load_member_state(1, stack.member_state(2))
    after = stack(X[[0, 2, 2]])
    torch.testing.assert_close(after[1], before[2])
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(stack.member_state(1), stack.member_state(2))
