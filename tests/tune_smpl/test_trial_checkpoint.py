"""The trainable's checkpoints from real short Tune trials (digits, 20 steps, a report every
10): every one loads with weights_only=True, `load_model` rebuilds from it alone (the
dataset loader patched to fail) the model that scored the report's val_accuracy, and a trial
restored from its first checkpoint (`restore_from`, as `--resume` gives it) reports what the
uninterrupted trial reported, bit for bit."""

from __future__ import annotations

import pytest
import torch

import smpl_core.data
from smpl_core.config import SMPLConfig
from smpl_core.data import load_splits
from smpl_core.evaluation import evaluate
from trainables import RESTORE_FIELD, STATE_FILE, load_model, with_resources

CONFIG = dict(dataset="digits", steps=20, eval_every=10, batch_size=16, mu=2, val_size=100,
              ema_decay=0.9, device="cpu", seed=5)


def _trial(tmp_path, name: str, config: dict):
    """(the trial's result, [(checkpoint folder, its report)] by step)."""
    from ray import tune

    tuner = tune.Tuner(with_resources(1, 0), param_space=config,
                       run_config=tune.RunConfig(name=name, storage_path=str(tmp_path),
                                                 verbose=0))
    (result,) = tuner.fit()
    assert result.error is None, result.error
    kept = sorted(result.best_checkpoints, key=lambda cm: cm[1]["step"])
    return result, [(c.path, m) for c, m in kept]


@pytest.fixture(scope="module")
def trial(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return root, _trial(root, "one", CONFIG)


def test_every_checkpoint_loads_as_weights_only(trial):
    _, (_, kept) = trial
    assert [m["step"] for _, m in kept] == [10, 20]
    for path, _ in kept:
        state = torch.load(f"{path}/{STATE_FILE}", map_location="cpu", weights_only=True)
        assert state["model_info"]["input_shape"] == [1, 8, 8]
        assert state["model_info"]["num_classes"] == 10


def test_load_model_scores_what_the_trial_reported_without_the_dataset(trial, monkeypatch):
    _, (_, kept) = trial
    cfg = SMPLConfig.from_dict(CONFIG)
    splits = load_splits(cfg, torch.device("cpu"))  # the test's own copy, read first

    def no_data(*args, **kwargs):
        raise AssertionError("load_model read the dataset")

    for path, metrics in kept:
        with monkeypatch.context() as m:
            m.setattr(smpl_core.data, "load_splits", no_data)
            m.setattr("smpl_core.datasets.load_raw", no_data)
            model = load_model(path)
        acc, loss = evaluate(model, splits, splits.x_val, splits.y_val)
        assert acc == metrics["val_accuracy"] and loss == pytest.approx(metrics["val_loss"])


def test_a_trial_restored_from_its_checkpoint_continues_bit_for_bit(trial):
    root, (full, kept) = trial
    first = kept[0][0]
    resumed, rkept = _trial(root, "resumed", {**CONFIG, RESTORE_FIELD: first})
    assert [m["step"] for _, m in rkept] == [20]  # it continued; it did not redo step 10
    want, got = full.metrics, resumed.metrics
    for k in ("val_accuracy", "val_loss", "train/loss_uda", "train/loss_labeled",
              "train/feedback", "train/mask_ratio"):
        assert got[k] == want[k], k
    a = torch.load(f"{kept[-1][0]}/{STATE_FILE}", weights_only=True)
    b = torch.load(f"{rkept[-1][0]}/{STATE_FILE}", weights_only=True)
    for group in ("models", "train_models"):
        for role, sd in a[group].items():
            for k, v in sd.items():
                assert torch.equal(v, b[group][role][k]), (group, role, k)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
