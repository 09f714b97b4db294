"""Test-time adaptation without labels: a trained model adjusted to one target scan (or set of patterns).

Every method takes (model, patterns, sampling_mrad) — raw target patterns (N, Qx, Qy) at their angular
sampling (mrad/px), no labels — and returns an adapted *copy*; the model passed in is never changed.

- ``none``: an unchanged copy (the reference).
- ``batchnorm`` (:func:`recalibrate_batchnorm`): the running mean and variance of every BatchNorm layer
  re-estimated on the target inputs (a cumulative average over batches), so that each layer standardises the
  target's activations with the target's statistics rather than the training set's. Only networks with
  BatchNorm layers (the ResNets) change.
- ``prototypes`` (:func:`recenter_prototypes`): a prototype network's class means re-estimated on the target
  embeddings, EM-style: the model's own responsibilities softmax(cos/T) (E step), their weighted mean
  embeddings (M step), starting from the trained means.

``METHODS`` maps each name to its function and :func:`applies` says whether a method changes anything for a
model, so that a caller can loop over methods without branching on their names.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from polar4d_lib.models.neural import NeuralModel

#: Batch size (target patterns per forward pass) of the BatchNorm re-estimation.
BN_BATCH_SIZE = 128


def batchnorm_layers(model: Any) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of a network model ([] for a model without a network or without such layers)."""
    network = getattr(model, "network", None)
    if not isinstance(network, nn.Module):
        return []
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def unchanged(model: Any, patterns: np.ndarray | None = None, sampling_mrad: float | None = None) -> Any:
    """The reference method ``none``: an unchanged copy of the model."""
    return copy.deepcopy(model)


def recalibrate_batchnorm(model: Any, patterns: np.ndarray, sampling_mrad: float,
                          batch_size: int = BN_BATCH_SIZE) -> Any:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on the target patterns.

    The running mean and variance are reset and accumulated as a cumulative average (``momentum=None``) over
    near-equal batches of at most ``batch_size`` of the model's preprocessed target inputs, forwarded without
    gradients with only the BatchNorm layers in training mode (dropout stays off); the copy comes back in
    eval mode with the layers' momentum as trained. Learned weights are untouched. A model without BatchNorm
    layers comes back as an unchanged copy. Needs at least 2 target patterns."""
    adapted = copy.deepcopy(model)
    layers = batchnorm_layers(adapted)
    if not layers:
        return adapted
    x = adapted._inputs(patterns, sampling_mrad)
    if len(x) < 2:
        raise ValueError(f"BatchNorm re-estimation needs at least 2 target patterns, got {len(x)}")
    network = adapted.network.to(adapted.device)
    momenta = [layer.momentum for layer in layers]
    network.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        with torch.no_grad():
            for index in np.array_split(np.arange(len(x)), -(-len(x) // batch_size)):
                network(x[torch.from_numpy(index)].to(adapted.device))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        adapted.network = network.eval().cpu()
    adapted.metadata["adaptation"] = {"method": "batchnorm", "n_target": int(len(x))}
    return adapted


def has_prototypes(model: Any) -> bool:
    """Whether ``model`` is a prototype network (head 'proto')."""
    return isinstance(model, NeuralModel) and model.head == "proto"


def recenter_prototypes(model: Any, patterns: np.ndarray, sampling_mrad: float, iterations: int = 10,
                        min_responsibility: float = 1.0) -> Any:
    """A copy of a prototype model whose class means are re-estimated on the target embeddings.

    Starting from the trained means, ``iterations`` EM steps: responsibilities r (N, 8) = the model's own
    softmax(cos/T) with the current means (its temperature T as trained), then each class mean = the
    r-weighted mean of the target embeddings. A class whose total responsibility Σₙ rₙₖ is below
    ``min_responsibility`` (in patterns; classes absent from training always) keeps its trained mean."""
    if not has_prototypes(model):
        raise ValueError(f"prototype recentring applies to prototype models only (head 'proto'); "
                         f"got a {getattr(model, 'kind', type(model).__name__)} model")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    adapted = copy.deepcopy(model)
    embeddings = adapted._outputs(adapted._inputs(patterns, sampling_mrad))
    trained = adapted.class_means.numpy().astype(np.float64)
    present = adapted.class_present.numpy()
    for _ in range(int(iterations)):
        r = adapted._proba(embeddings).astype(np.float64)  # softmax(cos / T) with the current means
        weight = r.sum(axis=0)
        update = present & (weight >= min_responsibility)
        means = (r.T @ embeddings) / np.maximum(weight, 1e-12)[:, None]
        adapted.class_means = torch.from_numpy(np.where(update[:, None], means, trained).astype(np.float32))
    adapted.metadata["adaptation"] = {"method": "prototypes", "n_target": int(len(embeddings)),
                                      "iterations": int(iterations)}
    return adapted


#: Method name → adapt(model, patterns, sampling_mrad) → adapted copy.
METHODS: dict[str, Callable[..., Any]] = {
    "none": unchanged,
    "batchnorm": recalibrate_batchnorm,
    "prototypes": recenter_prototypes,
}

#: Method name → whether it changes anything for a model (``applies``).
_APPLIES: dict[str, Callable[[Any], bool]] = {
    "none": lambda model: True,
    "batchnorm": lambda model: bool(batchnorm_layers(model)),
    "prototypes": has_prototypes,
}


def applies(method: str, model: Any) -> bool:
    """Whether ``method`` adapts ``model``: 'none' always, 'batchnorm' a network with BatchNorm layers,
    'prototypes' a prototype network (head 'proto')."""
    if method not in _APPLIES:
        raise ValueError(f"unknown adaptation method {method!r}; use one of {', '.join(METHODS)}")
    return _APPLIES[method](model)
