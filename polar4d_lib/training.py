"""The training loop of the neural models: Adam, early stopping, seeds, progress bars, resumable runs.

The paper's recipe: Adam (lr 2e-4, weight decay 1e-4), batches of 128, at most 20 epochs, early stopping on
the validation loss with patience 5, the best epoch's weights restored at the end.

Two paths, kept apart on purpose:

- ``train_epoch`` — the only function that takes an ``Augmenter``: shuffles, augments, steps the optimizer;
- ``evaluate`` / ``forward_batches`` — model in eval mode under ``torch.no_grad()``; they take no augmenter,
  so validation and prediction can never see augmented data.

Determinism: the seed feeds ``torch.manual_seed`` (dropout, inside a forked RNG so the caller's global
state is untouched) and two ``torch.Generator``s (shuffling, augmentation). The fit runs with
``torch.use_deterministic_algorithms(True, warn_only=True)``; on CPU two fits with the same seed and the
same number of threads give bit-identical weights.

Resuming: with ``checkpoint_path`` every epoch writes model, optimizer, epoch, history, early-stopping state
and all RNG states atomically (``torch.save`` to a temporary file, then ``os.replace``); ``fit`` continues
from that file when it exists (read with ``torch.load(weights_only=True)``), and an interrupted run resumed
this way ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from polar4d_lib import config, conventions
from polar4d_lib.atomic import atomic_write

#: Width σ (in classes) of the circular Gaussian soft labels of the prototype loss.
PROTO_SIGMA = 1.25

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the paper's)."""

    lr: float = 2e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    max_epochs: int = 20
    patience: int = 5
    seed: int = 888
    device: str = "cpu"
    num_threads: int | None = None  # torch intra-op threads during the fit (None: leave as configured)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"lr must be > 0 and weight_decay ≥ 0, got lr={self.lr}, weight_decay={self.weight_decay}")

    def resume_key(self) -> dict[str, Any]:
        """What must agree between a checkpoint and the run resuming it (all but max_epochs, device, threads)."""
        return {k: v for k, v in asdict(self).items() if k not in ("max_epochs", "device", "num_threads")}


@dataclass
class History:
    """Per-epoch training record (training values on augmented batches in train mode, validation values
    through the evaluation path)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch whose weights were kept (0: none yet)
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epochs": self.epochs}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "History":
        return cls(**{k: values[k] for k in ("train_loss", "val_loss", "train_acc", "val_acc", "best_epoch",
                                             "stopped_early")})


# --- targets, losses, decoding ------------------------------------------------------------------------

def class_vectors(labels: torch.Tensor) -> torch.Tensor:
    """(cos θ_k, sin θ_k) of the class angles θ_k = k·45° (B, 2), the regression target."""
    angle = torch.deg2rad(labels.to(torch.float32) * (360.0 / conventions.N_CLASSES))
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def soft_labels(labels: torch.Tensor, classes: torch.Tensor, sigma: float = PROTO_SIGMA) -> torch.Tensor:
    """Circular Gaussian soft labels over ``classes``: exp(−d²/(2σ²)) with d the circular class distance
    (conventions.circular_distance), normalised per row. (B, len(classes))."""
    d = conventions.circular_distance(labels.cpu().numpy()[:, None], classes.cpu().numpy()[None, :])
    w = torch.exp(-torch.as_tensor(d, dtype=torch.float32) ** 2 / (2.0 * sigma**2))
    return (w / w.sum(dim=1, keepdim=True)).to(labels.device)


def prototype_logits(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch prototypes (mean embedding of each class present) and logits = −squared Euclidean distance
    of every embedding to each prototype. Returns (logits (B, C), classes present (C,), sorted)."""
    classes = torch.unique(labels)
    onehot = (labels[:, None] == classes[None, :]).to(embeddings.dtype)
    prototypes = (onehot.T @ embeddings) / onehot.sum(dim=0)[:, None]
    logits = -((embeddings[:, None, :] - prototypes[None, :, :]) ** 2).sum(dim=-1)
    return logits, classes


def prototype_loss(embeddings: torch.Tensor, labels: torch.Tensor, sigma: float = PROTO_SIGMA) -> torch.Tensor:
    """KL divergence (batch mean) from the circular Gaussian soft labels to log-softmax(−d²) over the
    prototypes of the classes present in the batch."""
    logits, classes = prototype_logits(embeddings, labels)
    return F.kl_div(F.log_softmax(logits, dim=1), soft_labels(labels, classes, sigma), reduction="batchmean")


def loss_fn(head: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The head's loss: 'cls' cross-entropy, 'reg' MSE to (cos θ, sin θ), 'proto' prototype KL loss."""
    if head == "cls":
        return F.cross_entropy(outputs, labels)
    if head == "reg":
        return F.mse_loss(outputs, class_vectors(labels))
    if head == "proto":
        return prototype_loss(outputs, labels)
    raise ValueError(f"unknown head {head!r}; use cls, reg or proto")


def decode_reg(outputs: np.ndarray) -> np.ndarray:
    """Classes of regression outputs (N, 2) = (cos, sin): the ±22.5° sector of atan2(sin, cos)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    return conventions.class_from_angle(np.degrees(np.arctan2(outputs[:, 1], outputs[:, 0])))


def batch_predictions(head: str, outputs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Classes predicted within one batch, for the running accuracy: argmax (cls), atan2 sector (reg),
    nearest per-batch prototype (proto)."""
    outputs = outputs.detach()
    if head == "cls":
        return outputs.argmax(dim=1).cpu().numpy()
    if head == "reg":
        return decode_reg(outputs.cpu().numpy())
    logits, classes = prototype_logits(outputs, labels)
    return classes[logits.argmax(dim=1)].cpu().numpy()


# --- the two paths ------------------------------------------------------------------------------------

def _batches(n: int, batch_size: int, order: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    index = torch.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield index[start:start + batch_size]


def train_epoch(
    model: nn.Module,
    head: str,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: torch.Generator,
    augmenter: Augment | None = None,
    augment_generator: torch.Generator | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[float, float]:
    """One epoch of training on (x (N, 1, H, W), y (N,)) in a shuffled order; each batch is augmented
    (when ``augmenter`` is given) and the optimizer steps. Returns the sample-weighted (loss, accuracy)."""
    model.train()
    order = torch.randperm(len(y), generator=shuffle)
    total_loss, correct = 0.0, 0
    for index in tqdm(list(_batches(len(y), batch_size, order)), desc="batches", leave=False, disable=not progress):
        xb, yb = x[index], y[index]
        if augmenter is not None:
            xb, yb = augmenter(xb, yb, augment_generator)
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad(set_to_none=True)
        outputs = model(xb)
        loss = loss_fn(head, outputs, yb)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()}; lower the learning rate or check the inputs")
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(yb)
        correct += int((batch_predictions(head, outputs, yb) == yb.cpu().numpy()).sum())
    return total_loss / len(y), correct / len(y)


@torch.inference_mode()
def forward_batches(model: nn.Module, x: torch.Tensor, batch_size: int = 128, device: str = "cpu",
                    channels_last: bool = False) -> torch.Tensor:
    """Outputs of ``model`` (eval mode, no gradients, no augmentation) for x (N, C, H, W), on the CPU.
    ``channels_last``: each batch in channels-last memory order (for a model converted to it: convolutions
    on the CPU run about twice as fast on stacks of many channels)."""
    was_training = model.training
    model.eval()
    layout = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    try:
        return torch.cat([model(x[index].to(device).contiguous(memory_format=layout)).cpu()
                          for index in _batches(len(x), batch_size)])
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, head: str, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
             device: str = "cpu") -> tuple[float, float]:
    """Sample-weighted (loss, accuracy) on un-augmented data in eval mode (proto: per-batch prototypes of
    the evaluated batches, in their fixed order)."""
    was_training = model.training
    model.eval()
    try:
        total_loss, correct = 0.0, 0
        for index in _batches(len(y), batch_size):
            xb, yb = x[index].to(device), y[index].to(device)
            outputs = model(xb)
            total_loss += loss_fn(head, outputs, yb).item() * len(yb)
            correct += int((batch_predictions(head, outputs, yb) == yb.cpu().numpy()).sum())
        return total_loss / len(y), correct / len(y)
    finally:
        model.train(was_training)


# --- the fit -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _deterministic(num_threads: int | None) -> Iterator[None]:
    """Deterministic algorithms (warn only) and a fixed thread count for the duration; restored after."""
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.get_num_threads())
    torch.use_deterministic_algorithms(True, warn_only=True)
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        torch.set_num_threads(old[2])


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the training data (so a checkpoint is only resumed on the data it was made with)."""
    h = hashlib.sha256()
    for t in (x, y):
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().numpy())
    return h.hexdigest()


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, blob: dict[str, Any]) -> None:
    """``torch.save`` ``blob`` atomically: a temporary file beside ``path``, then ``os.replace``."""
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by ``fit`` (``weights_only=True``: no code is loaded)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "run" not in blob:
        raise ValueError(f"{path} is not a polar4d training checkpoint; delete it or pass another checkpoint_path")
    return blob


def fit(
    model: nn.Module,
    head: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    cfg: TrainConfig = TrainConfig(),
    augmenter: Augment | None = None,
    checkpoint_path: str | os.PathLike | None = None,
) -> History:
    """Train ``model`` in place on x (N, 1, H, W) float32, y (N,) int64 with early stopping on the
    validation loss; the best epoch's weights are restored at the end. Resumes from ``checkpoint_path``
    when that file exists (same data, head and hyper-parameters but ``max_epochs``), and writes it after
    every epoch. Returns the ``History``."""
    if len(x_train) != len(y_train) or len(x_val) != len(y_val) or len(y_train) == 0 or len(y_val) == 0:
        raise ValueError(f"need non-empty, matching training ({len(x_train)}, {len(y_train)}) and validation "
                         f"({len(x_val)}, {len(y_val)}) patterns and labels")
    y_train, y_val = y_train.to(torch.int64), y_val.to(torch.int64)
    progress = bool(config.get("progress_bar"))
    threads = cfg.num_threads or config.as_dict().get("num_threads")
    run_key = json.dumps({"head": head, **cfg.resume_key(), "data": _fingerprint(x_train, y_train),
                          "val": _fingerprint(x_val, y_val)}, sort_keys=True)
    model.to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    augment_generator = torch.Generator().manual_seed(cfg.seed + 1)
    history = History()
    best_loss, best_state, bad_epochs = math.inf, _state_copy(model), 0

    with _deterministic(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if checkpoint_path is not None and Path(checkpoint_path).is_file():
            blob = load_checkpoint(checkpoint_path)
            if blob["run"] != run_key:
                raise ValueError(f"checkpoint {checkpoint_path} belongs to another run (data, head or settings "
                                 "differ); delete it or pass another checkpoint_path")
            model.load_state_dict(blob["model"])
            optimizer.load_state_dict(blob["optimizer"])
            history = History.from_dict(json.loads(blob["history"]))
            best_loss, best_state, bad_epochs = blob["best_loss"], blob["best_model"], blob["bad_epochs"]
            shuffle.set_state(blob["rng_shuffle"])
            augment_generator.set_state(blob["rng_augment"])
            torch.set_rng_state(blob["rng_global"])

        epochs = tqdm(range(history.epochs, cfg.max_epochs), desc=f"training ({head})", unit="epoch",
                      initial=history.epochs, total=cfg.max_epochs, disable=not progress)
        for _ in epochs:
            if bad_epochs >= cfg.patience:
                break
            train_loss, train_acc = train_epoch(model, head, optimizer, x_train, y_train, cfg.batch_size, shuffle,
                                                augmenter, augment_generator, cfg.device, progress)
            val_loss, val_acc = evaluate(model, head, x_val, y_val, cfg.batch_size, cfg.device)
            for name, value in (("train_loss", train_loss), ("train_acc", train_acc), ("val_loss", val_loss),
                                ("val_acc", val_acc)):
                getattr(history, name).append(float(value))
            if val_loss < best_loss:
                best_loss, best_state, bad_epochs = val_loss, _state_copy(model), 0
                history.best_epoch = history.epochs
            else:
                bad_epochs += 1
            history.stopped_early = bad_epochs >= cfg.patience and history.epochs < cfg.max_epochs
            epochs.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.3f}")
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, {
                    "run": run_key, "model": _state_copy(model), "optimizer": copy.deepcopy(optimizer.state_dict()),
                    "epoch": history.epochs, "history": json.dumps(history.to_dict()), "best_loss": float(best_loss),
                    "best_model": best_state, "bad_epochs": bad_epochs, "rng_shuffle": shuffle.get_state(),
                    "rng_augment": augment_generator.get_state(), "rng_global": torch.get_rng_state(),
                })
        epochs.close()
    model.load_state_dict(best_state)
    return history
