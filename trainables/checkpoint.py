"""A trial's checkpoint file (`state.pt`): written with tensors and plain types only, read
back with `torch.load(weights_only=True)`, so reading a checkpoint from a sweep's storage
never runs pickled code (a file on a shared disk or a bucket is input, not code).

What the file holds: the state `smpl_core.fit` hands its report (models, optimisers,
sampler, RNG states, step, config), converted on save where a value is not a tensor or a
plain type (dict, list, tuple, str, int, float, bool, None): a numpy array (numpy's RNG
state) is stored as its raw bytes in a uint8 tensor with its dtype and shape, and comes back
as the same array on load. In it, `model_info` (from the loop's state): the evaluated
model's name, role, input shape and class count, so `load_model` rebuilds it without the
dataset.

`load_model(checkpoint)`: the model whose `val_accuracy` the checkpoint's report gave (the
evaluated copy: EMA weights when `ema_decay > 0`, precise BatchNorm statistics when
`eval_bn=precise`), on the CPU, in eval mode. Like the model `smpl_core.fit` evaluates, it
takes normalised inputs (`Splits.inputs`): `model_info` also keeps the per-channel `mean`
and `std` of image data for that.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smpl_core.errors import ConfigError
from smpl_core.uri import is_uri
from trainables.names import STATE_FILE

MODEL_INFO = "model_info"
_NDARRAY = "__ndarray__"  # the tag of a numpy array stored as bytes


def encode(obj: Any, where: str = "state") -> Any:
    """`obj` with every numpy array as a tagged uint8 tensor and every numpy scalar as a
    Python one; a TypeError (naming where it is) for anything else that is not a tensor or
    a plain type, so a checkpoint that could not be read back is never written. A subtree
    that needs no change is returned as it is (a state_dict keeps its `_metadata`)."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"{where}: a numpy array of Python objects cannot be checkpointed")
        a = np.ascontiguousarray(obj)
        return {_NDARRAY: torch.from_numpy(a.reshape(-1).view(np.uint8).copy()),
                "dtype": a.dtype.str, "shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = {k: encode(v, f"{where}[{k!r}]") for k, v in obj.items()}
        for k in out:
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
        return obj if all(out[k] is obj[k] for k in out) else out
    if isinstance(obj, (list, tuple)):
        items = [encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if all(a is b for a, b in zip(items, obj)) and type(obj) in (list, tuple):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} is not a "
                    f"tensor or a plain type; convert it before it is checkpointed")


def decode(obj: Any) -> Any:
    """The inverse of `encode`."""
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            raw = obj[_NDARRAY].numpy().tobytes()
            return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(
                obj["shape"]).copy()
        out = {k: decode(v) for k, v in obj.items()}
        return obj if all(out[k] is obj[k] for k in out) else out
    if isinstance(obj, (list, tuple)):
        items = [decode(v) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    return obj


def save_state(state: dict, path: str | os.PathLike) -> None:
    """Write `state` (a checkpointable dict) to `path` as `load_state` reads it."""
    torch.save(encode(state), path)


def _legacy_numpy() -> list:
    """What a checkpoint written before `encode` holds besides tensors and plain types:
    numpy's RNG state (a uint32 array). Rebuilding a numpy array of numbers runs no code of
    the file's; an object array would need its elements' classes, which stay refused."""
    reconstruct = np.empty(0).__reduce__()[0]  # numpy's own array reconstructor
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def read_state(data: bytes | str | os.PathLike, name: str) -> dict:
    """The state in a checkpoint file (its path, or its bytes; `name`: the file as the
    user knows it, for the message). Only tensors and plain types load: a file holding any
    other pickled object is refused (ConfigError naming the file), its code never run."""
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with torch.serialization.safe_globals(_legacy_numpy()):
            state = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[-1][:300]
        raise ConfigError(f"checkpoint {name} must hold only tensors and plain types, but it "
                          f"holds a pickled object that is not one; it was refused unread "
                          f"({reason}). Use a checkpoint this sweep wrote.") from None
    except (RuntimeError, EOFError) as e:  # a file cut short, or not a torch file
        raise ConfigError(f"checkpoint {name} must be a torch file, but it could not be read "
                          f"({e}); it may be cut short.") from None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {name} must hold a dict, but holds a "
                          f"{type(state).__name__}.")
    return decode(state)


def load_state(path: str | os.PathLike) -> dict:
    return read_state(path, str(path))


def _read_checkpoint(checkpoint: str | os.PathLike) -> dict:
    """The state of a checkpoint folder or its `state.pt`, given as a local path or a
    pyarrow.fs URI (`s3://...?endpoint_override=...`)."""
    text = os.fspath(checkpoint)
    if not is_uri(text):
        p = Path(text).expanduser()
        if p.is_dir():
            p = p / STATE_FILE
        if not p.is_file():
            raise ConfigError(f"`checkpoint` must be a checkpoint folder (with {STATE_FILE}) "
                              f"or its {STATE_FILE}, but got checkpoint={text!r}, which is "
                              f"not there.")
        return load_state(p)
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(text)
    inner = inner.rstrip("/")
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        inner = f"{inner}/{STATE_FILE}"
    if fs.get_file_info(inner).type != pafs.FileType.File:
        raise ConfigError(f"`checkpoint` must be a checkpoint folder (with {STATE_FILE}) or "
                          f"its {STATE_FILE}, but got checkpoint={text!r}, which is not "
                          f"there.")
    with fs.open_input_stream(inner) as fh:
        return read_state(fh.read(), text)


def load_model(checkpoint: str | os.PathLike) -> torch.nn.Module:
    """The model a trial's checkpoint scored (the evaluated copy, whose `val_accuracy` its
    report gave), rebuilt from the checkpoint alone: CPU, eval mode, no dataset read.

    `checkpoint`: a checkpoint folder (`<sweep>/trial_<key>/checkpoint_000003`) or its
    `state.pt`, a local path or a pyarrow.fs URI. Its inputs are normalised as
    `smpl_core.data.Splits.inputs` does (`model_info` mean and std, for images)."""
    from smpl_core.models import build_model

    state = _read_checkpoint(checkpoint)
    info = state.get(MODEL_INFO)
    if not isinstance(info, dict):
        raise ConfigError(f"checkpoint {os.fspath(checkpoint)} must carry `{MODEL_INFO}` "
                          f"(input shape and class count) to be rebuilt without its "
                          f"dataset, but it has none: it was written before checkpoints "
                          f"carried it.")
    model = build_model(info["model"], tuple(info["input_shape"]), int(info["num_classes"]))
    model.load_state_dict(state["models"][info["role"]])
    return model.to("cpu").eval()
