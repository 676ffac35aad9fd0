"""Training loop: hardest-in-batch loss, SGD with linear decay, checkpoints, exact resume, export.

Exact resume: batch ``b`` of epoch ``e`` is rebuilt from ``(seed, e, b)`` by
``PairDataset``, and the dropout RNG is reseeded from
``(seed, step)`` every step, so a resumed run continues the same sequence of updates.

``train`` reads top to bottom as its steps: ``_start`` (processes, device, data),
``_init_net`` (random or ``init`` weights), ``_restore`` (resume), then per epoch
``_train_epoch`` (``_train_step`` per batch), ``_validate``, ``_save_checkpoint``,
and at the end ``export``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.phototour import PhotoTourData, find_pair_files, read_pairs, read_phototour
from ..descriptor import describe_patches
from ..core.device import autocast, resolve_device, resolve_precision
from ..fpr95 import pairs_fpr95
from ..core.model import HardNet
from ..outputs import check_output, json_is_ours, read_json_object, replacing, write_json
from ..core.patches import PatchSpec, check_flag, check_integer, check_number
from ..core.weights import Weights, check_state_dict, load_weights, read_checkpoint, save_weights, weights_file
from .augment import AugmentConfig
from .datasets.writer import spec_record
from .loss import NEAR_DUPLICATE_DIST, hardest_in_batch_loss
from .sampler import MixedPairs, PairDataset, split_batch

CHECKPOINT = "checkpoint.pt"
LOG_COLUMNS = ("epoch", "step", "pairs_seen", "loss", "lr", "val_fpr95", "pairs_per_s", "elapsed_s")
VAL_BATCH = 2048  # patches per forward pass when validating


@dataclass
class TrainConfig:
    """Recipe; defaults follow the paper (SGD, momentum 0.9, dampening 0.9, wd 1e-4, batch 1024).

    Paths may be ``str`` or ``os.PathLike`` and integers numpy integers: ``train`` works on the copy
    ``check_config`` returns, with plain ``str``/``int``/``float`` values (what checkpoints and the model card hold).
    """

    data: str | list[str]  # PhotoTour-layout training folder(s)
    out: str  # output folder: checkpoint, log.csv, weights
    val: str | list[str] | None = None  # PhotoTour-layout folder(s) with an m50_*.txt pair file, each '[NAME=]PATH'
    mix: list[float] | None = None  # share of each batch per data folder (default: equal shares)
    epochs: int = 10
    pairs_per_epoch: int = 1_000_000
    batch_size: int = 1024
    lr: float = 10.0
    momentum: float = 0.9
    dampening: float = 0.9
    weight_decay: float = 1e-4
    margin: float = 1.0
    anchor_swap: bool = True
    batch_reduce: str = "min"
    dropout: float = 0.3
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # every augmentation (CLI: --aug, --aug-strength,
    # --augment, --rot-deg, --scale-jitter; AugmentConfig.parse)
    photos_per_batch: int | list[int] = 0  # > 0: each batch's points come from this many photos (harder
    # negatives); a list gives each data folder its own
    init: str | None = None  # start from these weights (fine-tuning) instead of a random init
    seed: int = 0
    precision: str = "auto"  # 'auto' = bf16 on CPUs with native bf16 (else fp32), fp16 AMP on CUDA; or 'fp32'
    device: str = "auto"
    checkpoint_every: int = 200  # steps
    max_steps: int | None = None  # stop early (time-boxed sessions); resume later
    extra: dict = field(default_factory=dict)  # recorded in the model card (e.g. dataset summary)


class TrainingError(ValueError):
    """Training cannot go on: the loss or the weights became NaN/inf, or a checkpoint is unusable."""


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Refuse, before any work, settings no run can use (the message names the field); returns a copy with
    plain values: paths (``str`` or ``os.PathLike``) as ``str``, numpy numbers as ``int``/``float``.

    Raises:
        TypeError: a value of another type, e.g. ``epochs must be an integer, got float 1.5``.
        ValueError: a value out of range, e.g. ``epochs must be >= 1, got 0``.
    """
    def need(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ValueError(f"{name} must be {rule} (--{name.replace('_', '-')}), got {getattr(cfg, name)!r}")

    integers = {"epochs": 1, "batch_size": 2, "pairs_per_epoch": 1, "seed": 0, "checkpoint_every": 1}  # the lows
    positive = {"lr": True, "margin": True, "momentum": False, "dampening": False, "weight_decay": False,
                "dropout": False}  # > 0 (True) or >= 0
    for name, low in integers.items():
        check_integer(getattr(cfg, name), name, low)
    check_integer(cfg.max_steps, "max_steps", 1, none="None: no limit")
    need(cfg.pairs_per_epoch >= cfg.batch_size, "pairs_per_epoch", f">= batch_size ({cfg.batch_size})")
    need(cfg.seed < 2**32, "seed", "in [0, 2**32)")  # torch seeds from seed * 1_000_003 + step: a long long
    for name, strict in positive.items():
        check_number(getattr(cfg, name), name, 0, strict)
    need(cfg.momentum < 1, "momentum", "in [0, 1)")
    need(cfg.dampening <= 1, "dampening", "in [0, 1]")
    need(cfg.dropout < 1, "dropout", "in [0, 1)")
    per_folder = cfg.photos_per_batch if isinstance(cfg.photos_per_batch, (list, tuple)) else [cfg.photos_per_batch]
    for k in per_folder:
        check_integer(k, "photos_per_batch", 0)
    if cfg.mix is not None and not isinstance(cfg.mix, (list, tuple)):
        raise TypeError(f"mix must be a list of fractions, one per data folder, got {type(cfg.mix).__name__}")
    for f in cfg.mix or []:
        check_number(f, "mix")
    check_flag(cfg.anchor_swap, "anchor_swap")
    need(cfg.batch_reduce in ("min", "average", "random"), "batch_reduce", "'min', 'average' or 'random'")
    if not isinstance(cfg.augment, AugmentConfig):
        raise TypeError(f"augment must be an AugmentConfig (AugmentConfig.parse), got {type(cfg.augment).__name__}")
    if not isinstance(cfg.extra, dict):
        raise TypeError(f"extra must be a dict, got {type(cfg.extra).__name__}")
    try:  # it goes into model_card.json and the checkpoint: JSON values only
        extra = json.loads(json.dumps(cfg.extra))
    except (TypeError, ValueError) as err:
        raise TypeError(f"extra must hold JSON values (it goes into model_card.json): {err}") from None
    photos = [int(k) for k in per_folder]
    return dataclasses.replace(
        cfg, **{name: int(getattr(cfg, name)) for name in integers},
        **{name: float(getattr(cfg, name)) for name in positive},
        data=_path_or_list(cfg.data, "data"), out=_path(cfg.out, "out"),
        val=None if cfg.val is None else _path_or_list(cfg.val, "val"),
        init=None if cfg.init is None else _init_source(_path(cfg.init, "init")),
        max_steps=None if cfg.max_steps is None else int(cfg.max_steps),
        mix=None if cfg.mix is None else [float(f) for f in cfg.mix],
        photos_per_batch=photos if isinstance(cfg.photos_per_batch, (list, tuple)) else photos[0],
        anchor_swap=bool(cfg.anchor_swap), extra=extra)


def _path(value: object, name: str) -> str:
    """A path field's value (``str`` or ``os.PathLike``) as a non-empty ``str``."""
    if not isinstance(value, (str, os.PathLike)) or not isinstance(os.fspath(value), str):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__} {value!r:.60}")
    if not os.fspath(value):
        raise ValueError(f"{name} must name a folder, got ''")
    return os.fspath(value)


def _init_source(init: str) -> str:
    """``init`` as the run records it: a local file as its resolved absolute path (it names the same weights from
    any folder), a bundled name or an ``hf://`` address as is."""
    path = weights_file(init)
    return init if path is None else str(path.resolve())


def _path_or_list(value: object, name: str) -> str | list[str]:
    """A path, or a list or tuple of paths, as ``str`` or ``list[str]``."""
    return [_path(v, name) for v in value] if isinstance(value, (list, tuple)) else _path(value, name)


@dataclass
class _Run:
    """The state of one training run, shared by the steps of ``train``."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    world: int  # processes (torchrun); 1 without DDP
    rank: int
    loader: PairDataset | MixedPairs
    val_sets: dict[str, tuple[PhotoTourData, tuple[np.ndarray, np.ndarray, np.ndarray]]]  # by name, in order
    data_id: list[dict[str, str]]  # each data folder, resolved, and the sha256 of its patches (``_data_identity``)
    init: Weights | None = None  # cfg.init's weights
    checkpoint: dict | None = None  # the checkpoint to resume, checked
    net: HardNet | None = None
    model: torch.nn.Module | None = None  # net, or its DDP wrapper
    opt: torch.optim.Optimizer | None = None
    step: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    @property
    def total(self) -> int:
        """Steps of the whole schedule (the learning rate decays to 0 over them)."""
        return self.cfg.epochs * len(self.loader)

    @property
    def stop(self) -> int:
        """The step this session stops at: the schedule's end or ``max_steps``."""
        return min(self.total, self.cfg.max_steps) if self.cfg.max_steps else self.total

    def lr(self) -> float:
        return self.cfg.lr * (1.0 - self.step / self.total)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, force: bool = False) -> Path:
    """Train, checkpointing to ``cfg.out``; returns the path of the exported ``.safetensors``.

    ``log.csv``, ``hardnet.safetensors`` and ``model_card.json`` already in ``cfg.out`` are replaced only
    if this trainer wrote them, or with ``force`` (else ``FileExistsError`` before any work). ``resume``
    continues ``cfg.out``'s checkpoint; it refuses a config that would change the run (see ``RESUMABLE``)."""
    from safetensors import SafetensorError
    from tqdm import tqdm

    run = _start(cfg, resume, force)
    cfg = run.cfg
    _init_net(run)
    _restore(run)
    with _open_log(run) as write_row:
        bar = tqdm(total=run.total, initial=run.step, desc="train", unit="step",
                   disable=not (progress and run.main_process))
        while _epochs_left(run):
            epoch, losses, rate, t0 = _train_epoch(run, bar)
            epoch_done = run.step % len(run.loader) == 0
            validate = run.main_process and bool(run.val_sets) and (epoch_done or run.step == run.stop)
            fprs = _validate(run) if validate else dict.fromkeys(run.val_sets, float("nan"))
            row = {"epoch": epoch + (1 if epoch_done else 0), "step": run.step,
                   "pairs_seen": run.step * cfg.batch_size, "loss": float(np.mean(losses)) if losses else float("nan"),
                   "lr": run.lr(), "val_fpr95": next(iter(fprs.values()), float("nan")), "pairs_per_s": rate,
                   "elapsed_s": time.time() - t0}
            row.update({f"val_fpr95_{name}": v for name, v in fprs.items()} if len(fprs) > 1 else {})
            run.history.append(row)
            write_row(row)
            scores = ", ".join(f"{name} {v:.4f}" for name, v in fprs.items()) or "-"
            bar.write(f"epoch {row['epoch']} step {run.step}: loss {row['loss']:.4f} val FPR95 {scores}")
            _save_checkpoint(run)
        bar.close()
    if run.world > 1:
        torch.distributed.destroy_process_group()
    path = run.out / "hardnet.safetensors"
    _check_weights(run)
    if not run.main_process:
        return path
    try:
        return export(run.net, cfg, run.history, path)
    except (OSError, SafetensorError) as err:  # a full disk
        raise TrainingError(_cannot_write(run, path, err) + f"; the checkpoint {run.out / CHECKPOINT} is kept, "
                            "--resume exports from it") from None


def _start(cfg: TrainConfig, resume: bool = False, force: bool = False) -> _Run:
    """Set-up, cheapest checks first: the config, the output folder and its checkpoint, the processes
    (torchrun) and device, the ``init`` weights, the checkpoint to resume, the validation sets, then the
    training data and the sampler. Makes no folder: a failed start leaves nothing behind."""
    cfg = check_config(cfg)
    out = Path(cfg.out)
    for name, ours in _OUTPUTS.items():  # before any work
        check_output(out / name, ours, force=force)
    path = out / CHECKPOINT
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a checkpoint: move it away, or train into another output folder")
    if path.exists() and not resume:
        raise FileExistsError(f"{path} exists: pass --resume (resume=True) to continue it, or train into another "
                              "output folder")
    if resume and not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    # torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: one process per GPU, each with its own batches
    # (hardest-in-batch mining stays within a process's batch), gradients averaged by DDP.
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if world > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        cuda = torch.cuda.is_available()
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}") if cuda else torch.device("cpu")
    else:
        device = resolve_device(cfg.device)
    resolve_precision(cfg.precision, device)  # an unknown name or fp16 off CUDA fails before any work
    patch_scale = data_patch_metadata(cfg).get(PatchSpec.METADATA_KEYS["scale"])  # meta.json only
    init = _load_init(cfg, patch_scale) if cfg.init else None
    checkpoint = _read_resumable(path, cfg, device) if resume else None
    # before the (larger) training data: a bad name fails early
    val_sets = read_val_sets(cfg.val, patch_scale, ", ".join(_paths(cfg.data)))
    loader = make_sampler(cfg, cfg.seed + 7919 * rank)
    parts = loader.parts if isinstance(loader, MixedPairs) else [loader]
    data_id = [_data_identity(folder, part.data) for folder, part in zip(_paths(cfg.data), parts)]
    if checkpoint is not None:
        _check_same_data(checkpoint, data_id, path)
    return _Run(cfg, out, device, world, rank, loader, val_sets, data_id, init, checkpoint)


def _load_init(cfg: TrainConfig, patch_scale: float | None) -> Weights:
    """``cfg.init``'s weights, refused if they were trained at another patch_scale than the data's."""
    init = load_weights(cfg.init)
    if None not in (init.patch_scale, patch_scale) and init.patch_scale != patch_scale:
        raise ValueError(f"--init {cfg.init} was trained at patch_scale {init.patch_scale}, but {cfg.data} "
                         f"holds patches at patch_scale {patch_scale}")
    return init  # a min_kp_size other than the data's is a fine-tune to it: allowed


def _init_net(run: _Run) -> None:
    """The network (random init from ``seed``, or ``cfg.init`` weights), its DDP wrapper and SGD."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    net = HardNet(dropout=cfg.dropout)
    if run.init is not None:
        net.load_state_dict(run.init.state_dict)
    run.net = net.to(run.device).to(memory_format=torch.channels_last)
    run.model = torch.nn.parallel.DistributedDataParallel(run.net) if run.world > 1 else run.net
    run.opt = torch.optim.SGD(run.net.parameters(), lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                              weight_decay=cfg.weight_decay)


#: The ``TrainConfig`` fields a resumed run may change: they cannot change the weights it trains (where it
#: runs, what it logs and when it checkpoints or stops; ``val`` is checked against log.csv's columns). Every
#: other field (the data, the schedule, the loss, the batches, the optimizer) must be the checkpoint's.
RESUMABLE = ("out", "val", "precision", "device", "checkpoint_every", "max_steps", "extra")


def _read_resumable(path: Path, cfg: TrainConfig, device: torch.device) -> dict:
    """The checkpoint at ``path``, checked, if ``cfg`` continues its run.

    Raises:
        WeightsError, TrainingError: an empty, corrupt, unsafe or foreign file.
        ValueError: ``cfg`` differs from the checkpoint's config in a field not in ``RESUMABLE`` (each named).
    """
    ckpt = read_checkpoint(path, map_location=device)  # WeightsError for empty, corrupt or unsafe files
    _check_checkpoint(ckpt, path)
    was = ckpt["config"]
    try:
        was_augment = augment_of(was)
    except (TypeError, ValueError) as err:
        raise TrainingError(f"{path}: its config's augmentations are unreadable ({_first_line(err)})") from None
    defaults = TrainConfig(data="", out="")  # a field an older checkpoint lacks had its default
    differ = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUMABLE or f.name == "data":
            continue
        before = was_augment if f.name == "augment" else was.get(f.name, getattr(defaults, f.name))
        now = getattr(cfg, f.name)
        if f.name == "init" and isinstance(before, str) and now is not None and _init_source(before) == now:
            continue  # an older checkpoint's relative --init: resolved against this folder
        if before != now:
            differ.append(f"{f.name} {_short(before)} (now {_short(now)})")
    before, now = _paths(was["data"]), _paths(cfg.data)
    if len(before) != len(now) or ("data_id" not in ckpt and list(map(_resolved, before)) != list(map(_resolved, now))):
        differ.append(f"data {', '.join(before)} (now {', '.join(now)})")  # an older checkpoint: folders only
    if differ:
        raise ValueError(f"{path} was made with other settings: {'; '.join(differ)}; resume with the same recipe "
                         "(the values it was made with), or train into another output folder")
    return ckpt


def _check_same_data(ckpt: dict, data_id: list[dict[str, str]], path: Path) -> None:
    """Refuse to resume on other patches than the checkpoint's (its ``data_id``; the same patches in a folder
    that moved are the same data)."""
    for before, now in zip(ckpt.get("data_id") or [], data_id):
        if not isinstance(before, dict) or before.get("sha256") != now["sha256"]:
            was = before.get("folder") if isinstance(before, dict) else before
            raise ValueError(f"{path} was made with other data: {now['folder']} holds other patches than {was} "
                             "held then; resume with the same data, or train into another output folder")


def _data_identity(folder: str, data: PhotoTourData) -> dict[str, str]:
    """A data folder as a checkpoint records it: resolved, with the sha256 of its point ids, photos and patches."""
    digest = hashlib.sha256()
    for array in (data.point_ids, data.source, data.patches):
        if array is not None:
            digest.update(np.ascontiguousarray(array).data)
    return {"folder": str(_resolved(folder)), "sha256": digest.hexdigest()}


def _resolved(path: str) -> Path:
    return Path(path).expanduser().resolve()


def _short(value: object) -> str:
    """A config value in a message: an ``AugmentConfig`` as its non-default fields."""
    if isinstance(value, AugmentConfig):
        changed = {k: v for k, v in asdict(value).items() if v != getattr(AugmentConfig(), k)}
        return f"AugmentConfig({', '.join(f'{k}={v!r}' for k, v in changed.items())})"
    return repr(value)


def _restore(run: _Run) -> None:
    """Continue ``run.checkpoint`` (read and checked by ``_start``): weights, optimizer, step and history."""
    ckpt, path = run.checkpoint, run.out / CHECKPOINT
    if ckpt is None:
        return
    if ckpt["step"] > run.total:  # the learning rate would be negative, and nothing trains
        raise TrainingError(f"{path}: its step {ckpt['step']} is beyond this run's {run.total} steps "
                            f"({run.cfg.epochs} epochs of {len(run.loader)})")
    run.net.load_state_dict(ckpt["model"])
    try:
        run.opt.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise TrainingError(f"{path}: its optimizer state does not fit this network ({_first_line(err)})") from None
    run.step, run.history = ckpt["step"], list(ckpt["history"])


def _check_checkpoint(ckpt: object, path: Path) -> None:
    """Raise ``TrainingError`` unless ``ckpt`` has the layout ``_save_checkpoint`` writes."""
    fields = {"model": dict, "optimizer": dict, "step": int, "history": list, "config": dict}
    if not isinstance(ckpt, dict):
        raise TrainingError(f"{path}: not a checkpoint of this trainer (a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in fields if k not in ckpt]
    if missing:
        raise TrainingError(f"{path}: not a checkpoint of this trainer (no {', '.join(missing)})")
    for key, kind in fields.items():
        if not isinstance(ckpt[key], kind) or (kind is int and ckpt[key] < 0):
            raise TrainingError(f"{path}: not a checkpoint of this trainer ({key} is {ckpt[key]!r:.40})")
    if not {"seed", "batch_size", "data"} <= set(ckpt["config"]):
        raise TrainingError(f"{path}: not a checkpoint of this trainer (its config has no seed, batch_size or data)")
    check_state_dict(ckpt["model"], str(path))  # WeightsError naming the key and shape


def augment_of(config: dict) -> AugmentConfig:
    """The augmentations of a ``TrainConfig`` stored as a dict (a checkpoint's ``config``): its ``augment``,
    or, in runs from before ``AugmentConfig`` held them all, ``aug``, ``aug_strength``, ``augment`` (the
    flip/rot90 switch), ``rot_deg`` and ``scale_jitter``."""
    value = config.get("augment")
    if isinstance(value, dict):
        return AugmentConfig(**value)
    return AugmentConfig.parse(config.get("aug"), config.get("aug_strength", 1.0), flip_rot90=bool(value),
                               rot_deg=config.get("rot_deg", 0.0), scale=config.get("scale_jitter", 0.0))


def _first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _check_weights(run: _Run) -> None:
    """Raise ``TrainingError`` if a weight became NaN or inf (nothing is then saved or exported)."""
    for key, value in run.net.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise TrainingError(f"step {run.step}: {key} contains NaN or inf: training diverged, nothing was "
                                "saved or exported; lower --lr, or try --precision fp32")


def _log_is_ours(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        return f.readline().startswith(",".join(LOG_COLUMNS))


def _weights_are_ours(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return "model_card" in (f.metadata() or {})


#: The files ``train`` writes into ``cfg.out`` besides its checkpoint, and how it knows its own.
_OUTPUTS = {"log.csv": _log_is_ours, "hardnet.safetensors": _weights_are_ours, "model_card.json": json_is_ours}


@contextmanager
def _open_log(run: _Run) -> Iterator[Callable[[dict], None]]:
    """``log.csv``, begun with the rows of the run so far (a resumed run's checkpoint history: rows that an
    earlier session logged after its last checkpoint go, as the steps they describe are trained again); yields
    a function that writes one row. With several validation sets, a column ``val_fpr95_NAME`` per set follows
    ``LOG_COLUMNS`` (whose ``val_fpr95`` is the first set's); a resumed run must have the same columns."""
    if not run.main_process:
        yield lambda row: None
        return
    log = run.out / "log.csv"
    columns = list(LOG_COLUMNS) + ([f"val_fpr95_{name}" for name in run.val_sets] if len(run.val_sets) > 1 else [])
    old = log.read_text().splitlines()[:1] if run.history and log.is_file() else []
    if (old and old[0] != ",".join(columns)) or any(set(columns) - set(row) for row in run.history):
        raise ValueError(f"{log} has other columns than this run ({','.join(columns)}): resume with the same "
                         "--val sets")
    with replacing(log) as tmp:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([columns, *([row[c] for c in columns] for row in run.history)])
    with open(log, "a", newline="") as f:
        writer = csv.writer(f)

        def write_row(row: dict) -> None:
            writer.writerow([row[c] for c in columns])
            f.flush()

        yield write_row


def _epochs_left(run: _Run) -> bool:
    """True while steps remain, or while the last step has no log row yet (a run resumed at its
    ``max_steps``: it then validates and logs once without training)."""
    return run.step < run.stop or not run.history or run.history[-1]["step"] != run.step


def _train_epoch(run: _Run, bar) -> tuple[int, list[float], float, float]:
    """Train from ``run.step`` to the end of its epoch or to ``run.stop``.

    Returns:
        ``(epoch, losses, pairs per second, start time)``; no losses and NaN pairs/s when no step was left.
    """
    epoch, index = divmod(run.step, len(run.loader))
    losses, t0, first, rate = [], time.time(), run.step, float("nan")
    run.net.train()
    for anchor, positive in run.loader.batches(epoch, index) if run.step < run.stop else ():
        losses.append(_train_step(run, anchor, positive))
        rate = (run.step - first) * run.cfg.batch_size / (time.time() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", pairs_s=f"{rate:.0f}")
        if run.step % run.cfg.checkpoint_every == 0:
            _save_checkpoint(run)
        if run.step >= run.stop:
            break
    return epoch, losses, rate, t0


def _train_step(run: _Run, anchor: torch.Tensor, positive: torch.Tensor) -> float:
    """One SGD step on a batch of (anchor, positive) patches ``(B, 1, 32, 32)``; returns the loss."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed * 1_000_003 + run.step + 7919 * run.rank)  # dropout, reproducible on resume
    for group in run.opt.param_groups:
        group["lr"] = run.lr()
    anchor = anchor.to(run.device).contiguous(memory_format=torch.channels_last)
    positive = positive.to(run.device).contiguous(memory_format=torch.channels_last)
    with autocast(run.device, cfg.precision):
        desc = run.model(torch.cat([anchor, positive]))
    flat = desc.detach().float()
    spread = (flat - flat.mean(0)).norm(dim=1).max()
    if float(spread) < NEAR_DUPLICATE_DIST / 2:  # every two descriptors nearer than that: no negative is left
        raise TrainingError(f"step {run.step + 1}: the network gives one descriptor for all {len(desc)} patches of the "
                            "batch, so the loss is 0 and nothing can train; the start weights are degenerate (all "
                            "zero?) or training collapsed: choose other --init weights, or lower --lr")
    loss = hardest_in_batch_loss(desc[: len(anchor)], desc[len(anchor) :], margin=cfg.margin,
                                 anchor_swap=cfg.anchor_swap, reduction_mode=cfg.batch_reduce)
    if not bool(torch.isfinite(loss)):
        raise TrainingError(f"step {run.step + 1}: the loss is {loss.item()} (lr {run.lr():g}): training diverged; "
                            "nothing was exported (the last checkpoint is from before); lower --lr, or try "
                            "--precision fp32")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.step += 1
    return loss.item()


def _validate(run: _Run) -> dict[str, float]:
    """FPR95 on the pairs of each validation set, by name, with the network in eval mode (fp32)."""
    net = run.net.eval()
    return {name: pairs_fpr95(lambda p: describe_patches(net, p, device=run.device, batch_size=VAL_BATCH),
                              data.patches, pairs) for name, (data, pairs) in run.val_sets.items()}


def _save_checkpoint(run: _Run) -> None:
    """Write ``checkpoint.pt`` atomically (main process only)."""
    if not run.main_process:
        return
    _check_weights(run)
    path = run.out / CHECKPOINT
    try:
        with replacing(path) as tmp:  # atomic: a kill mid-write never leaves a broken checkpoint
            torch.save({"model": run.net.state_dict(), "optimizer": run.opt.state_dict(), "step": run.step,
                        "history": run.history, "config": asdict(run.cfg), "data_id": run.data_id}, tmp)
    except (OSError, RuntimeError) as err:  # a full disk: torch says "unexpected pos 9152 vs 9040"
        raise TrainingError(f"step {run.step}: {_cannot_write(run, path, err)}; the last checkpoint is kept, "
                            "--resume goes on from it") from None


def _cannot_write(run: _Run, path: Path, err: Exception) -> str:
    """``cannot write PATH (N MiB free on its disk: ERROR)``."""
    free = shutil.disk_usage(run.out).free / 2**20
    return f"cannot write {path} ({free:.0f} MiB free on its disk: {_first_line(err)})"


def _paths(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


#: The ``PatchSpec`` metadata a make-dataset ``meta.json`` without the key means (older datasets have no
#: ``min_kp_size``: none was applied; a missing ``patch_scale`` stays unknown).
_DATA_DEFAULTS = {PatchSpec.METADATA_KEYS["min_kp_size"]: 0.0}


def data_patch_metadata(cfg: TrainConfig) -> dict[str, float]:
    """How the training patches were cut, under ``PatchSpec``'s metadata keys (``patch_scale``,
    ``min_kp_size``): each from ``cfg.extra``, else from make-dataset's ``meta.json`` (one value for all
    data folders); a key that nothing records is left out.

    Raises:
        ValueError: the folders' ``meta.json`` disagree on a key, or record a value no ``PatchSpec`` takes.
    """
    recorded = [r for r in map(_recorded_patches, _paths(cfg.data)) if r is not None]
    keys = PatchSpec.METADATA_KEYS.values()
    PatchSpec.from_metadata({k: v for k, v in cfg.extra.items() if k in keys and v is not None}, "TrainConfig.extra")
    settings = {}
    for key in keys:
        found = {path: values[key] for path, values in recorded if key in values}
        if cfg.extra.get(key) is None and len(set(found.values())) > 1:
            raise ValueError(f"the data folders hold patches cut with different {key}: {found}")
        value = cfg.extra[key] if cfg.extra.get(key) is not None else next(iter(found.values()), None)
        if value is not None:
            settings[key] = float(value)
    return settings


def _recorded_patches(folder: str) -> tuple[str, dict[str, float]] | None:
    """``(meta.json, {key: value})``: how make-dataset's ``meta.json`` beside ``folder`` says its patches were cut
    (``PatchSpec``'s metadata keys it records); None without a ``meta.json``.

    Raises:
        ValueError: naming the file, if it is not a JSON object, or records a value no ``PatchSpec`` takes.
    """
    meta_path = Path(folder).parent / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = read_json_object(meta_path)
    except ValueError as err:
        raise ValueError(f"{err} (train reads make-dataset's meta.json beside each data folder)") from None
    meta = {**_DATA_DEFAULTS, **{k: v for k, v in meta.items() if v is not None}}
    spec = PatchSpec.from_metadata(meta, source=str(meta_path))  # checks the values
    return str(meta_path), {k: v for k, v in spec_record(spec).items() if k in meta}


def make_sampler(cfg: TrainConfig, seed: int) -> PairDataset | MixedPairs:
    """The batch sampler of ``cfg``: one ``PairDataset``, or a ``MixedPairs`` of one per data folder."""
    folders = _paths(cfg.data)
    if not folders:
        raise ValueError("no training data folder given")
    if cfg.mix is not None and len(cfg.mix) != len(folders):
        raise ValueError(f"--mix gives {len(cfg.mix)} fractions for {len(folders)} data folders")
    shares = split_batch(cfg.batch_size, cfg.mix or [1.0] * len(folders))
    photos = [cfg.photos_per_batch] * len(folders) if isinstance(cfg.photos_per_batch, int) else cfg.photos_per_batch
    if len(photos) != len(folders):
        raise ValueError(f"--photos-per-batch gives {len(photos)} values for {len(folders)} data folders")
    n_batches = cfg.pairs_per_epoch // cfg.batch_size
    patch_scale = PatchSpec.from_metadata(data_patch_metadata(cfg)).scale  # the default if unrecorded
    parts = []
    for k, (folder, share, k_photos) in enumerate(zip(folders, shares, photos)):
        if share < 2:
            raise ValueError(f"--mix gives {folder} {share} pairs of a batch of {cfg.batch_size}; it needs >= 2")
        parts.append(PairDataset(read_phototour(folder), max(n_batches, 1) * share, batch_size=share, seed=seed,
                                 augment=cfg.augment, photos_per_batch=k_photos, patch_scale=patch_scale, stream=k))
    return parts[0] if len(parts) == 1 else MixedPairs(parts)


def val_name(spec: str) -> tuple[str, str]:
    """``'NAME=PATH'`` or ``'PATH'`` -> (name, path); a bare path is named by its folder, or by its parent's
    when the folder is called ``val``/``test``/``train`` (``data/real1/val`` -> ``real1``)."""
    name, sep, path = spec.partition("=")
    if not sep:
        p = Path(spec.rstrip("/"))
        name, path = (p.parent.name if p.name in ("val", "test", "train") else p.name) or "val", spec
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"validation set name {name!r} must be letters, digits, '_', '-' or '.'")
    return name, path


def read_val_sets(val: str | list[str] | None, patch_scale: float | None = None,
                  data: str = "the training data") -> dict[str, tuple[PhotoTourData, tuple]]:
    """Validation sets by name: patches and the pairs of the folder's first ``m50_*.txt``.

    Raises:
        ValueError: a pair file without matching or without non-matching pairs (FPR95 needs both), or a
            folder whose ``meta.json`` records another patch_scale than ``patch_scale`` (that of ``data``,
            the training folders, as the message names them).
    """
    sets = {}
    key = PatchSpec.METADATA_KEYS["scale"]
    for spec in _paths(val):
        name, path = val_name(spec)
        if name in sets:
            raise ValueError(f"two validation sets are named {name!r}; name them with NAME=PATH")
        files = find_pair_files(path)
        if not files:
            raise FileNotFoundError(f"no m50_*.txt pair file in validation folder {path}")
        meta_path, recorded = _recorded_patches(path) or ("", {})
        if None not in (patch_scale, recorded.get(key)) and recorded[key] != patch_scale:
            raise ValueError(f"--val {path} holds patches cut at patch_scale {recorded[key]:g} ({meta_path}), but "
                             f"{data} at patch_scale {patch_scale:g}: validate on patches cut like the training data")
        patches = read_phototour(path)
        pairs = read_pairs(files[0], len(patches))
        missing = "matching" if not pairs[2].any() else "non-matching" if pairs[2].all() else None
        if missing:
            raise ValueError(f"--val {path}: {files[0]} holds no {missing} pairs; FPR95 needs matching and "
                             "non-matching ones")
        sets[name] = (patches, pairs)
    return sets


def export(net: HardNet, cfg: TrainConfig, history: list[dict], path: Path) -> Path:
    """Write weights (safetensors, with the card in its metadata) and ``model_card.json`` beside them."""
    data = data_patch_metadata(cfg)
    last = history[-1] if history else {}
    card = {
        "architecture": "HardNet (Mishchuk et al., NIPS 2017)",
        **{key: data.get(key) for key in PatchSpec.METADATA_KEYS.values()},  # patch_scale, min_kp_size
        "pairs_seen": last.get("pairs_seen", 0),
        "val_fpr95": last.get("val_fpr95"),
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("extra",)},
        "history": history,
        **cfg.extra,
    }
    metadata = {k: v for k, v in PatchSpec.from_metadata(data).to_metadata().items() if k in data}
    metadata["model_card"] = json.dumps(card)
    with replacing(path) as tmp:  # an interrupted export leaves the old file or the new one
        save_weights(net.eval(), tmp, metadata)
    write_json(path.with_name("model_card.json"), card, force=True, default=str)  # train checked it
    return path
