"""The 9 neural models ``{cnn,resnet,vgg}-{cls,reg,proto}`` behind the common estimator interface.

A ``NeuralModel`` replays its ``Preprocessor`` on raw patterns, trains one of the networks of
``networks.py`` with ``training.fit`` (augmentation only inside the training step) and turns the network's
outputs into class probabilities:

- ``cls``: softmax of the logits.
- ``reg``: the output (c, s) = r·(cos θ̂, sin θ̂) is decoded by θ̂ = atan2(s, c) into the ±22.5° sector
  (``predict``) and the angle itself (``predict_angle_deg``). Probabilities are a von-Mises-like spread
  around θ̂, p_k ∝ exp(κ cos(θ_k − θ̂)) with κ = r·κ_max: a short output vector (the network hesitating
  between opposite directions) gives a broad distribution. κ_max is calibrated after training by maximising
  the log-likelihood of the validation labels over ``KAPPA_GRID`` and saved with the model. Its argmax is
  the atan2 sector.
- ``proto``: after training, the mean embedding of each class over the training and validation patterns;
  ``predict`` is the cosine-nearest class mean, ``predict_proba`` the softmax of the cosine similarities
  divided by a temperature (calibrated like κ_max, saved). Classes absent from training get probability 0.

Saved as ``.pt``: ``torch.save`` of a dict holding only tensors, strings and numbers (the JSON header with
kind, preprocessing, hyper-parameters and training metadata, the state dict, κ_max, temperature, class
means), read back by ``load_model`` with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator

import numpy as np
import torch
from scipy.special import log_softmax, softmax
from sklearn.model_selection import train_test_split

import polar4d_lib
from polar4d_lib import config, conventions, training
from polar4d_lib.augmentation import AugmentationConfig, Augmenter, mirror_x, rotate90
from polar4d_lib.models.base import PolarizationModel, angle_deg, circular_mean_deg, register
from polar4d_lib.models.networks import (DEFAULT_DEPTH, ENCODERS, HEADS, RESNET_DEPTHS, VGG_DEPTHS, PolarNet,
                                         build_network)
from polar4d_lib.preprocessing import Preprocessor

KINDS: tuple[str, ...] = tuple(f"{encoder}-{head}" for encoder in ENCODERS for head in HEADS)
#: Inputs per network pass when predicting (at least the training batch): larger batches amortise each call.
PREDICT_BATCH = 256

#: Candidate κ_max (regression spread) and inverse temperatures (prototype softmax) for the calibration.
KAPPA_GRID: np.ndarray = np.geomspace(0.25, 256.0, 31)
INVERSE_TEMPERATURE_GRID: np.ndarray = np.geomspace(0.5, 512.0, 31)
#: Unit vectors (cos θ_k, sin θ_k) of the 8 class angles (8, 2).
CLASS_VECTORS: np.ndarray = np.stack([np.cos(np.radians(conventions.CLASS_ANGLES_DEG)),
                                      np.sin(np.radians(conventions.CLASS_ANGLES_DEG))], axis=1)


def check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """Labels as int64 (n,), each a class 0–7; one-line ValueError otherwise."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the patterns, got {labels.shape}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= conventions.N_CLASSES):
        raise ValueError(f"labels must be integer classes 0–{conventions.N_CLASSES - 1}; got dtype {labels.dtype}, "
                         f"range {labels.min()}–{labels.max()}")
    return labels.astype(np.int64)


def validation_split(labels: np.ndarray, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (stratified where possible) split of indices into training and a ``fraction`` validation part."""
    n = len(labels)
    n_val = max(1, int(round(fraction * n)))
    if n - n_val < 1:
        raise ValueError(f"{n} pattern(s) cannot be split into training and validation; pass more or validation=")
    counts = np.bincount(labels)
    stratify = labels if n_val >= np.count_nonzero(counts) and counts[counts > 0].min() >= 2 else None
    train, val = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def input_statistics(x: torch.Tensor, floor: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and standard deviation of preprocessed inputs (N, 1, n, n), averaged over the 8
    D4 images of the pattern (the class set is closed under D4, so the statistics should be too), the
    deviation floored at ``floor`` × its median so that near-constant pixels are not blown up.

    Why: the polarization shows in weak intensity differences far from the bright-field disk; min–max
    scaled inputs leave them at ~1e-3 and networks fit them slowly, per-pixel standardisation exposes them
    (measured on the default dataset: a linear classifier goes from 18 % to 47 % on held-out specimens)."""
    x = x.double()
    moments = torch.stack([x.mean(dim=0)[0], x.pow(2).mean(dim=0)[0]])  # (2, n, n)
    symmetric = sum(rotate90(m, t) for m in (moments, mirror_x(moments)) for t in range(4)) / 8
    mean = symmetric[0]
    std = (symmetric[1] - mean.pow(2)).clamp_min(0).sqrt()
    std = std.clamp_min(floor * float(std.median()) + 1e-12)
    return mean.float(), std.float()


def best_scale(scores: np.ndarray, labels: np.ndarray, grid: np.ndarray) -> float:
    """The factor g in ``grid`` maximising Σ log softmax(g·scores)[label] (validation log-likelihood)."""
    rows = np.arange(len(labels))
    loglik = [log_softmax(g * scores, axis=1)[rows, labels].sum() for g in grid]
    return float(grid[int(np.argmax(loglik))])


def _cosine(embeddings: np.ndarray, means: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Cosine similarity (N, 8) of embeddings to the class means; −inf for classes absent in training."""
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    m = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return np.where(present[None, :], e @ m.T, -np.inf)


def _versions() -> dict[str, str]:
    from polar4d_lib._torchvision_compat import import_torchvision

    return {"polar4d": polar4d_lib.__version__, "torch": torch.__version__,
            "torchvision": import_torchvision().__version__, "numpy": np.__version__}


@register
class NeuralModel(PolarizationModel):
    """One of the 9 network variants (``kind`` = '{cnn,resnet,vgg}-{cls,reg,proto}')."""

    kinds = KINDS
    suffix = ".pt"

    def __init__(
        self,
        kind: str = "cnn-cls",
        preprocessor: Preprocessor | None = None,
        depth: int | None = None,
        augmentation: AugmentationConfig | None = None,
        max_epochs: int = 20,
        batch_size: int = 128,
        lr: float = 2e-4,
        weight_decay: float = 1e-4,
        patience: int = 5,
        seed: int | None = None,
        device: str | None = None,
        dropout: float = 0.0,
        standardize: bool = True,
        d4_average: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(kind, Preprocessor() if preprocessor is None else preprocessor, metadata)
        self.encoder, self.head = kind.split("-")
        self.depth = DEFAULT_DEPTH[self.encoder] if depth is None else int(depth)
        self.augmentation = augmentation
        self.seed = int(config.resolve("seed", seed))
        self.device = str(config.resolve("device", device))
        self.dropout = float(dropout)
        self.standardize = bool(standardize)
        self.d4_average = bool(d4_average)
        self.train_config = training.TrainConfig(lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                                                 max_epochs=max_epochs, patience=patience, seed=self.seed,
                                                 device=self.device)
        self.network: PolarNet | None = None
        self.kappa_max = 1.0  # reg: κ = r · κ_max
        self.temperature = 1.0  # proto: softmax(cos / temperature)
        self.class_means = torch.zeros(conventions.N_CLASSES, 0)  # proto: (8, 128) mean embeddings
        self.class_present = torch.zeros(conventions.N_CLASSES, dtype=torch.bool)
        if self.encoder == "cnn" and self.depth is not None:
            raise ValueError(f"the custom CNN has a fixed depth; got depth={depth}, pass None")
        depths = {"resnet": RESNET_DEPTHS, "vgg": VGG_DEPTHS}.get(self.encoder)
        if depths is not None and self.depth not in depths:
            raise ValueError(f"{self.encoder} depth {self.depth} is not available; use one of {depths}")

    # --- construction ------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The constructor's hyper-parameters as JSON values (saved in the header)."""
        c = self.train_config
        return {"depth": self.depth, "augmentation": None if self.augmentation is None else self.augmentation.to_dict(),
                "max_epochs": c.max_epochs, "batch_size": c.batch_size, "lr": c.lr, "weight_decay": c.weight_decay,
                "patience": c.patience, "seed": self.seed, "dropout": self.dropout,
                "standardize": self.standardize, "d4_average": self.d4_average}

    def _new_network(self) -> PolarNet:
        """A freshly initialised network, its weights drawn from ``seed`` (the caller's RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return build_network(self.encoder, self.depth, self.head, size=self.preprocessor.size,
                                 dropout=self.dropout)

    def _inputs(self, patterns: np.ndarray, sampling_mrad: float) -> torch.Tensor:
        """Preprocessed patterns as a (N, 1, size, size) float32 tensor."""
        x = np.asarray(self.preprocessor.transform(np.asarray(patterns), sampling_mrad), dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if not np.all(np.isfinite(x)):
            raise ValueError("preprocessed patterns contain NaN or inf; check the input patterns")
        return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)

    # --- training ------------------------------------------------------------------------------------
    def fit(
        self,
        patterns: np.ndarray,
        labels: np.ndarray,
        sampling_mrad: float,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        checkpoint_path: str | os.PathLike | None = None,
    ) -> "NeuralModel":
        """Train on raw patterns (N, Qx, Qy) at ``sampling_mrad`` (mrad/px) with labels 0–7. ``validation``
        = (patterns, labels) at the same sampling, or None for a seeded 10 % split. ``checkpoint_path``
        makes the run resumable. Augmentation (if configured) touches training batches only."""
        labels = check_labels(labels, len(patterns))
        x, y = self._inputs(patterns, sampling_mrad), torch.from_numpy(labels)
        if validation is None:
            train, val = validation_split(labels, self.seed)
            x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]
        else:
            val_patterns, val_labels = validation
            x_train, y_train = x, y
            x_val = self._inputs(val_patterns, sampling_mrad)
            y_val = torch.from_numpy(check_labels(val_labels, len(val_patterns)))
        network = self._new_network()
        if self.standardize:
            network.set_input_statistics(*self._input_statistics(x_train))
        augmenter = self._augmenter()
        history = training.fit(network, self.head, x_train, y_train, x_val, y_val, self.train_config,
                               augmenter=augmenter, checkpoint_path=checkpoint_path)
        self.network = network.cpu().eval()
        self._calibrate(x_train, y_train, x_val, y_val)
        self.metadata = {
            "params": self.params(), "history": history.to_dict(), "epochs": history.epochs,
            "best_epoch": history.best_epoch, "seed": self.seed, "n_train": len(y_train), "n_val": len(y_val),
            "train_class_counts": np.bincount(y_train.numpy(), minlength=conventions.N_CLASSES).tolist(),
            "sampling_mrad": float(sampling_mrad), "kappa_max": self.kappa_max, "temperature": self.temperature,
            "versions": _versions(),
        }
        return self

    def _input_statistics(self, x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's input standardisation from the training inputs (:func:`input_statistics`)."""
        return input_statistics(x_train)

    def _augmenter(self) -> Augmenter | None:
        """What augments the training batches (None: nothing)."""
        return None if self.augmentation is None else Augmenter(self.augmentation)

    def _calibrate(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor) -> None:
        """reg: κ_max; proto: class means (training + validation) and temperature — on un-augmented data."""
        if self.head == "reg":
            scores = self._outputs(x_val) @ CLASS_VECTORS.T  # r·cos(θ_k − θ̂)
            self.kappa_max = best_scale(scores, y_val.numpy(), KAPPA_GRID)
        elif self.head == "proto":
            embeddings = self._outputs(torch.cat([x_train, x_val]))
            labels = torch.cat([y_train, y_val]).numpy()
            means = np.zeros((conventions.N_CLASSES, embeddings.shape[1]), dtype=np.float32)
            present = np.bincount(labels, minlength=conventions.N_CLASSES) > 0
            for k in np.flatnonzero(present):
                means[k] = embeddings[labels == k].mean(axis=0)
            self.class_means, self.class_present = torch.from_numpy(means), torch.from_numpy(present)
            scores = _cosine(embeddings[len(y_train):], means, present)
            self.temperature = 1.0 / best_scale(scores, y_val.numpy(), INVERSE_TEMPERATURE_GRID)

    # --- prediction (evaluation path: eval mode, no gradients, never augmented) --------------------------
    def _outputs(self, x: torch.Tensor) -> np.ndarray:
        if self.network is None:
            raise ValueError(f"this {self.kind} model is not fitted; call fit() or load a saved model")
        network = self.network.to(self.device, memory_format=torch.channels_last)
        try:
            out = training.forward_batches(network, x, max(self.train_config.batch_size, PREDICT_BATCH), self.device,
                                           channels_last=True)
        finally:
            self.network = network.cpu()
        return out.numpy().astype(np.float64)

    def _scores(self, out: np.ndarray) -> np.ndarray:
        """Per-class scores whose argmax is the prediction: cls logits, reg r·cos(θ_k − θ̂), proto cosines."""
        if self.head == "reg":
            return out @ CLASS_VECTORS.T
        if self.head == "proto":
            return _cosine(out, self.class_means.numpy().astype(np.float64), self.class_present.numpy())
        return out

    def _proba(self, out: np.ndarray) -> np.ndarray:
        scale = {"cls": 1.0, "reg": self.kappa_max, "proto": 1.0 / self.temperature}[self.head]
        return softmax(scale * self._scores(out), axis=1).astype(np.float32)

    def _classes(self, out: np.ndarray) -> np.ndarray:
        if self.head == "reg":
            return training.decode_reg(out)
        return np.argmax(self._scores(out), axis=1).astype(np.int8)

    def _angle_deg(self, out: np.ndarray) -> np.ndarray:
        if self.head == "reg":
            return angle_deg(out)
        return circular_mean_deg(self._proba(out))

    def _network_outputs(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        return self._outputs(self._inputs(patterns, sampling_mrad))

    def _symmetric_images(self, x: torch.Tensor) -> Iterator[tuple[torch.Tensor, Callable[[np.ndarray], np.ndarray]]]:
        """The 8 images g·x of preprocessed inputs x (N, 1, n, n) under the square's symmetry
        (:func:`conventions.d4_operations`), each with its class map g."""
        arr = x.numpy()
        for pattern_map, class_map in conventions.d4_operations():
            yield torch.from_numpy(np.ascontiguousarray(pattern_map(arr))), class_map

    def _d4_proba(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """``d4_average``: the mean over the symmetry operations g of :meth:`_symmetric_images` (the 8 of the
        square, and any further ones a subclass adds) of the probabilities of the image g·x, class g·k read as
        class k — a predictor that rotates and mirrors exactly with its input (the network alone, trained
        with D4 augmentation, only approximately). (N, 8) float32."""
        x = self._inputs(patterns, sampling_mrad)
        classes = np.arange(conventions.N_CLASSES)
        total, images = np.zeros((len(x), conventions.N_CLASSES)), 0
        for image, class_map in self._symmetric_images(x):
            total += self._proba(self._outputs(image))[:, class_map(classes)]
            images += 1
        return (total / images).astype(np.float32)

    def predict_maps(self, patterns: np.ndarray, sampling_mrad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities (N, 8), classes (int8) and angles (degrees) from one preprocessing: without
        ``d4_average`` from one network pass, with it from the D4 mean of the probabilities (classes its
        argmax, angles its circular mean)."""
        if self.d4_average:
            proba = self._d4_proba(patterns, sampling_mrad)
            return proba, np.argmax(proba, axis=1).astype(np.int8), circular_mean_deg(proba)
        out = self._network_outputs(patterns, sampling_mrad)
        return self._proba(out), self._classes(out), self._angle_deg(out)

    def predict_proba(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """(N, 8) float32: cls softmax; reg exp(κ_max·r·cos(θ_k − θ̂)) normalised; proto softmax(cos/T)
        (with ``d4_average``: their mean over the 8 symmetric images)."""
        if self.d4_average:
            return self._d4_proba(patterns, sampling_mrad)
        return self._proba(self._network_outputs(patterns, sampling_mrad))

    def predict(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Classes (int8): cls argmax, reg the atan2 sector of the output, proto the cosine-nearest class
        mean (with ``d4_average``: the argmax of the averaged probabilities)."""
        if self.d4_average:
            return np.argmax(self._d4_proba(patterns, sampling_mrad), axis=1).astype(np.int8)
        return self._classes(self._network_outputs(patterns, sampling_mrad))

    def predict_angle_deg(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """reg: the decoded angle atan2(s, c) in degrees [0, 360); others (and ``d4_average``): the
        probability-weighted circular mean."""
        if self.d4_average:
            return circular_mean_deg(self._d4_proba(patterns, sampling_mrad))
        return self._angle_deg(self._network_outputs(patterns, sampling_mrad))

    # --- persistence ---------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if self.network is None:
            raise ValueError(f"this {self.kind} model is not fitted; call fit() before save()")
        return {"state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
                "kappa_max": float(self.kappa_max), "temperature": float(self.temperature),
                "class_means": self.class_means, "class_present": self.class_present}

    def _write(self, path: str) -> None:
        state = self._state()
        self.metadata["params"] = self.params()  # as they are now (d4_average may be set after fitting)
        torch.save({"header": json.dumps(self.header()), **state}, path)

    @classmethod
    def _from_state(cls, header: dict[str, Any], state: dict[str, Any]) -> "NeuralModel":
        metadata = header.get("metadata", {})
        params = dict(metadata.get("params", {}))
        missing = {"state_dict", "kappa_max", "temperature", "class_means", "class_present"} - set(state)
        if missing or not params:
            raise ValueError(f"{header.get('kind')} model file lacks {sorted(missing) or 'params'}; retrain it with polar4d train")
        augmentation = params.pop("augmentation")
        model = cls(header["kind"], Preprocessor.from_dict(header["preprocessor"]),
                    augmentation=None if augmentation is None else AugmentationConfig.from_dict(augmentation),
                    metadata=metadata, **params)
        network = model._new_network()
        try:
            network.load_state_dict(state["state_dict"])
        except RuntimeError as error:
            raise ValueError(f"weights do not fit a {header['kind']} network ({str(error).splitlines()[0]}); "
                             "retrain the model") from None
        model.network = network.eval()
        model.kappa_max, model.temperature = float(state["kappa_max"]), float(state["temperature"])
        model.class_means, model.class_present = state["class_means"], state["class_present"].to(torch.bool)
        return model
