"""A trial's checkpoint: written with tensors and plain types only, read back with
`torch.load(weights_only=True)` (a pickled object with code in it is refused, its code never
run), resumed bit for bit, and its evaluated model rebuilt with no dataset access.

The checkpoints here are written by the trainable's own `write_checkpoint` from the states a
real short `smpl_core.fit` run reports (the trainable's report does the same inside Ray:
tests/tune_smpl/test_trial_checkpoint.py runs it there)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import smpl_core.data
from smpl_core.config import SMPLConfig
from smpl_core.errors import ConfigError
from smpl_core.loop import fit
from trainables import STATE_FILE, load_checkpoint_state, load_model, load_state
from trainables.checkpoint import decode, encode, save_state
from trainables.train import write_checkpoint

N = 5  # steps between reports


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(**kw) -> SMPLConfig:
    base = dict(method="smpl", dataset="digits", num_labeled=50, val_size=100, steps=2 * N,
                eval_every=N, batch_size=16, mu=2, device="cpu", seed=3, ema_decay=0.9,
                eval_bn="precise")
    return SMPLConfig(**{**base, **kw})


def _run(cfg: SMPLConfig, root: Path, state: dict | None = None):
    """`fit`, each report's state written as the trainable writes its checkpoint."""
    folders, reports = [], []

    def report(metrics, run_state):
        reports.append(metrics)
        d = root / f"checkpoint_{len(folders):06d}"
        d.mkdir(parents=True)
        write_checkpoint(run_state, d)
        folders.append(d)

    return fit(cfg, report=report, state=state), folders, reports


class _Evil:
    """Pickles as a call of os.system: what loading with weights_only=False would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_with_code_in_it_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "checkpoint_000000"
    d.mkdir()
    # A real checkpoint's tensors, plus one pickled object whose unpickling runs a command.
    torch.save({"step": 1, "models": {"model": {"w": torch.ones(2)}}, "x": _Evil(marker)},
               d / STATE_FILE)
    with pytest.raises(ConfigError, match="refused unread") as e:
        load_state(d / STATE_FILE)
    assert str(d / STATE_FILE) in str(e.value)
    with pytest.raises(ConfigError):
        load_model(d)
    from ray import tune

    with pytest.raises(ConfigError):  # what a restarted or resumed trial loads with
        load_checkpoint_state(tune.Checkpoint(str(d)))
    assert not marker.exists()
    # The check can fail: the same file loaded without weights_only runs the command.
    torch.load(d / STATE_FILE, weights_only=False)
    assert marker.exists()


def test_a_checkpoint_cut_short_is_one_clear_error(tmp_path):
    path = tmp_path / STATE_FILE
    save_state({"step": 1, "w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ConfigError, match="could not be read"):
        load_state(path)


def test_encode_keeps_plain_types_and_turns_numpy_into_tensors():
    st = {"numpy": np.random.get_state(), "n": np.int64(3), "t": torch.arange(3),
          "nested": [1, 2.0, None, "s", True, (4, 5)]}
    enc = encode(st)
    assert isinstance(enc["numpy"][1]["__ndarray__"], torch.Tensor) and enc["n"] == 3
    assert enc["nested"] is st["nested"]  # nothing to convert: the same object
    back = decode(enc)
    assert back["numpy"][0] == "MT19937" and back["numpy"][1].dtype == np.uint32
    assert np.array_equal(back["numpy"][1], st["numpy"][1]) and back["numpy"][2:] == \
        st["numpy"][2:]
    with pytest.raises(TypeError, match=r"state\['g'\]"):  # never written, rather than unread
        encode({"g": torch.Generator()})


def test_checkpoint_round_trips_and_resumes_bit_for_bit(tmp_path):
    cfg = _cfg()
    full, folders, reports = _run(cfg, tmp_path / "full")
    assert [r["step"] for r in reports] == [N, 2 * N]
    # Every file of the trial loads under weights_only=True (nothing but tensors and
    # plain types in it), and its numpy RNG state comes back as numpy's own.
    torch.load(folders[0] / STATE_FILE, weights_only=True)
    state = load_state(folders[0] / STATE_FILE)
    assert state["step"] == N and isinstance(state["rng"]["numpy"][1], np.ndarray)
    resumed, rfolders, rreports = _run(cfg, tmp_path / "resumed", state=state)
    assert [r["step"] for r in rreports] == [2 * N]
    for k in ("val_accuracy", "val_loss", "train/loss_uda", "train/feedback"):
        assert rreports[-1][k] == reports[-1][k], k
    a, b = load_state(folders[-1] / STATE_FILE), load_state(rfolders[-1] / STATE_FILE)
    for group in ("models", "train_models"):
        for role, sd in a[group].items():
            for k, v in sd.items():
                assert torch.equal(v, b[group][role][k]), (group, role, k)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert np.array_equal(a["rng"]["numpy"][1], b["rng"]["numpy"][1])
    assert a["rng"]["python"] == b["rng"]["python"]
    # The check can fail: the weights moved between the two checkpoints.
    first = load_state(folders[0] / STATE_FILE)["models"]["model"]
    assert any(not torch.equal(first[k], v) for k, v in a["models"]["model"].items())


def test_load_model_rebuilds_the_evaluated_model_without_the_dataset(tmp_path, monkeypatch):
    cfg = _cfg()
    result, folders, reports = _run(cfg, tmp_path)
    splits = result.splits
    x = splits.inputs(splits.x_val)
    want = result.model.eval()(x)  # the trial's own model, as it scored val_accuracy

    def no_data(*args, **kwargs):
        raise AssertionError("load_model read the dataset")

    monkeypatch.setattr(smpl_core.data, "load_splits", no_data)
    monkeypatch.setattr("smpl_core.datasets.load_raw", no_data)
    model = load_model(folders[-1])
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        got = model(x)
    assert torch.equal(got, want.detach())
    acc = (got.argmax(1) == splits.y_val).float().mean().item()
    assert acc == pytest.approx(reports[-1]["val_accuracy"], abs=1e-9)
    assert load_model(folders[-1] / STATE_FILE)(x).shape == (len(x), 10)  # the file too
    with torch.no_grad():  # a URI, through pyarrow.fs as an s3:// one is
        assert torch.equal(load_model(f"file://{folders[-1]}")(x), got)
    info = load_state(folders[-1] / STATE_FILE)["model_info"]
    assert info["input_shape"] == [1, 8, 8] and info["num_classes"] == 10
    assert info["model"] == "cnn" and info["role"] == "model"
    # The EMA weights were evaluated, not the training model's.
    ema = load_state(folders[-1] / STATE_FILE)["train_models"]["ema"]
    raw = load_state(folders[-1] / STATE_FILE)["train_models"]["model"]
    sd = model.state_dict()
    assert any(not torch.equal(sd[k], raw[k]) for k in raw if k in sd)
    assert all(torch.equal(sd[k], ema[k]) for k in ema if "running" not in k
               and "num_batches" not in k)


def test_load_model_of_an_mpl_student(tmp_path):
    cfg = _cfg(method="mpl", ema_decay=0.0, eval_bn="running", steps=N)
    result, folders, reports = _run(cfg, tmp_path)
    model = load_model(str(folders[-1]))
    x = result.splits.inputs(result.splits.x_val)
    with torch.no_grad():
        assert torch.equal(model(x), result.model.eval()(x))


def test_load_model_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint="):
        load_model(tmp_path / "nope")
    old = tmp_path / "old"
    old.mkdir()
    save_state({"step": 1, "models": {"model": {}}}, old / STATE_FILE)
    with pytest.raises(ConfigError, match="model_info"):
        load_model(old)


def test_a_pickle_with_code_is_refused_from_bytes_too(tmp_path):
    from trainables.checkpoint import read_state

    marker = tmp_path / "pwned"
    blob = pickle.dumps({"x": _Evil(marker)}, protocol=2)
    path = tmp_path / "plain.pkl"
    path.write_bytes(blob)
    with pytest.raises(ConfigError):
        read_state(path.read_bytes(), "s3://bucket/x/state.pt")
    assert not marker.exists()
