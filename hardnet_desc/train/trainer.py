"""Training loop: hardest-in-batch loss, SGD with linear decay, checkpoints, exact resume, export.

Exact resume: batch ``b`` of epoch ``e`` is rebuilt from ``(seed, e, b)`` by
:class:`~hardnet_desc.train.datasets.PairDataset`, and the dropout RNG is reseeded from
``(seed, step)`` every step, so a resumed run continues the same sequence of updates.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..model import HardNet
from ..weights import load_weights, save_weights
from .datasets import PairDataset, PhotoTourData, find_pair_files, read_pairs, read_phototour
from .loss import hardest_in_batch_loss

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Recipe; defaults follow the paper (SGD, momentum 0.9, dampening 0.9, wd 1e-4, batch 1024)."""

    data: str  # PhotoTour-layout training folder
    out: str  # output folder: checkpoint, log.csv, weights
    val: str | None = None  # PhotoTour-layout folder with an m50_*.txt pair file
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
    augment: bool = False
    rot_deg: float = 0.0
    scale_jitter: float = 0.0
    photos_per_batch: int = 0  # > 0: each batch's points come from this many photos (harder negatives)
    init: str | None = None  # start from these weights (fine-tuning) instead of a random init
    seed: int = 0
    precision: str = "auto"  # 'auto' = bf16 on CPU, fp16 AMP on CUDA; or 'fp32'
    device: str = "auto"
    checkpoint_every: int = 200  # steps
    max_steps: int | None = None  # stop early (time-boxed sessions); resume later
    extra: dict = field(default_factory=dict)  # recorded in the model card (e.g. dataset summary)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16 if precision in ("auto", "fp16") else torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


@torch.inference_mode()
def describe(net: HardNet, patches_u8: np.ndarray, device: torch.device, batch: int = 2048) -> np.ndarray:
    """Descriptors ``(N, 128)`` of uint8 patches ``(N, 32, 32)`` with ``net`` in eval mode."""
    net.eval()
    out = []
    for i in range(0, len(patches_u8), batch):
        x = torch.from_numpy(patches_u8[i : i + batch]).to(device).float().unsqueeze(1)
        out.append(net(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train, checkpointing to ``cfg.out``; returns the path of the exported ``.safetensors``."""
    from tqdm import tqdm

    from ..descriptor import resolve_device
    from ..evaluation.phototour import pairs_fpr95  # here: evaluation imports train.datasets

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: one process per GPU, each with its own batches
    # (hardest-in-batch mining stays within a process's batch), gradients averaged by DDP.
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if world > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = resolve_device(cfg.device)
    main_process = rank == 0
    progress = progress and main_process
    data = read_phototour(cfg.data)
    loader = PairDataset(data, cfg.pairs_per_epoch, cfg.batch_size, cfg.seed + 7919 * rank, cfg.augment,
                         cfg.rot_deg, cfg.scale_jitter, cfg.photos_per_batch)
    val_data = val_pairs = None
    if cfg.val:
        val_data = read_phototour(cfg.val)
        files = find_pair_files(cfg.val)
        if not files:
            raise FileNotFoundError(f"no m50_*.txt pair file in validation folder {cfg.val}")
        val_pairs = read_pairs(files[0])

    torch.manual_seed(cfg.seed)
    net = HardNet(dropout=cfg.dropout)
    if cfg.init:
        init, patch_scale = load_weights(cfg.init), data_patch_scale(cfg)
        if None not in (init.patch_scale, patch_scale) and init.patch_scale != patch_scale:
            raise ValueError(f"--init {cfg.init} was trained at patch_scale {init.patch_scale}, but {cfg.data} "
                             f"holds patches at patch_scale {patch_scale}")
        net.load_state_dict(init.state_dict)
    net = net.to(device).to(memory_format=torch.channels_last)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                          weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    step, history = 0, []
    ckpt_path = out / CHECKPOINT
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt["config"]["seed"] != cfg.seed or ckpt["config"]["batch_size"] != cfg.batch_size:
            raise ValueError(f"{ckpt_path} was made with another seed or batch size; resume with the same recipe")
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, history = int(ckpt["step"]), list(ckpt["history"])
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it or choose another --out")

    def save_checkpoint() -> None:
        if not main_process:
            return
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "history": history, "config": asdict(cfg)}, tmp)
        tmp.replace(ckpt_path)  # atomic: a kill mid-write never leaves a broken checkpoint

    log = out / "log.csv" if main_process else Path(os.devnull)
    new_log = step == 0 or not log.exists() or log.stat().st_size == 0
    with open(log, "w" if new_log else "a", newline="") as f:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["epoch", "step", "pairs_seen", "loss", "lr", "val_fpr95", "pairs_per_s", "elapsed_s"])
            f.flush()
        bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not progress)
        stop = min(total, cfg.max_steps) if cfg.max_steps else total
        # also runs once with no training when the last step has no validation row yet (e.g. --max-steps)
        while step < stop or not history or history[-1]["step"] != step:
            epoch, index = divmod(step, len(loader))
            losses, t0, n0 = [], time.time(), step
            net.train()
            for anchor, positive in loader.batches(epoch, index) if step < stop else ():
                torch.manual_seed(cfg.seed * 1_000_003 + step + 7919 * rank)  # dropout, reproducible on resume
                lr = cfg.lr * (1.0 - step / total)
                for group in opt.param_groups:
                    group["lr"] = lr
                anchor = anchor.to(device).contiguous(memory_format=torch.channels_last)
                positive = positive.to(device).contiguous(memory_format=torch.channels_last)
                with _autocast(device, cfg.precision):
                    desc = model(torch.cat([anchor, positive]))
                loss = hardest_in_batch_loss(desc[: len(anchor)], desc[len(anchor):], margin=cfg.margin,
                                             anchor_swap=cfg.anchor_swap, reduction_mode=cfg.batch_reduce)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                losses.append(loss.item())
                rate = (step - n0) * cfg.batch_size / (time.time() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", pairs_s=f"{rate:.0f}")
                if step % cfg.checkpoint_every == 0:
                    save_checkpoint()
                if step >= stop:
                    break
            epoch_done = step % len(loader) == 0
            validate = main_process and val_data is not None and (epoch_done or step == stop)
            fpr = pairs_fpr95(lambda p: describe(net, p, device), val_data.patches, val_pairs) if validate else float("nan")
            row = {"epoch": epoch + (1 if epoch_done else 0), "step": step, "pairs_seen": step * cfg.batch_size,
                   "loss": float(np.mean(losses)) if losses else float("nan"), "lr": cfg.lr * (1.0 - step / total),
                   "val_fpr95": fpr, "pairs_per_s": rate if losses else float("nan"), "elapsed_s": time.time() - t0}
            history.append(row)
            writer.writerow(list(row.values()))
            f.flush()
            bar.write(f"epoch {row['epoch']} step {step}: loss {row['loss']:.4f} val FPR95 {fpr:.4f}")
            save_checkpoint()
        bar.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return export(net, cfg, history, out / "hardnet.safetensors") if main_process else out / "hardnet.safetensors"


def data_patch_scale(cfg: TrainConfig) -> float | None:
    """The training patches' scale: ``cfg.extra['patch_scale']``, else make-dataset's ``meta.json``, else None."""
    patch_scale = cfg.extra.get("patch_scale")
    if patch_scale is None:
        meta = Path(cfg.data).parent / "meta.json"
        patch_scale = json.loads(meta.read_text())["patch_scale"] if meta.is_file() else None
    return None if patch_scale is None else float(patch_scale)


def export(net: HardNet, cfg: TrainConfig, history: list[dict], path: Path) -> Path:
    """Write weights (safetensors, with the card in its metadata) and ``model_card.json`` beside them."""
    patch_scale = data_patch_scale(cfg)
    last = history[-1] if history else {}
    card = {
        "architecture": "HardNet (Mishchuk et al., NIPS 2017)",
        "patch_scale": patch_scale,
        "pairs_seen": last.get("pairs_seen", 0),
        "val_fpr95": last.get("val_fpr95"),
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("extra",)},
        "history": history,
        **cfg.extra,
    }
    metadata = {"patch_scale": str(patch_scale)} if patch_scale is not None else {}
    metadata["model_card"] = json.dumps(card)
    save_weights(net.eval(), path, metadata)
    path.with_name("model_card.json").write_text(json.dumps(card, indent=1, default=str))
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig(data="", out="")
    p.add_argument("data", help="training folder in the PhotoTour layout (e.g. OUT/train from make-dataset)")
    p.add_argument("out", help="output folder for checkpoint.pt, log.csv, hardnet.safetensors, model_card.json")
    p.add_argument("--val", help="validation folder with an m50_*.txt pair file (FPR95 per epoch)")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (a bundled name or a file) instead of "
                   "a random init")
    for name in ("epochs", "pairs_per_epoch", "batch_size", "seed", "checkpoint_every", "max_steps", "photos_per_batch"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("lr", "momentum", "dampening", "weight_decay", "margin", "dropout", "rot_deg", "scale_jitter"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--batch-reduce", choices=["min", "average", "random"], default=d.batch_reduce)
    p.add_argument("--no-anchor-swap", dest="anchor_swap", action="store_false")
    p.add_argument("--augment", action="store_true", help="'+' augmentation: random flip/rot90 of each pair")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=d.precision)
    p.add_argument("--device", default=d.device)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> Path:
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    path = train(cfg, resume=args.resume, progress=not args.quiet)
    print(f"weights: {path}")
    return path
