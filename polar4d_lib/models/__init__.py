"""The polarization models: 9 networks ({cnn,resnet,vgg}-{cls,reg,proto}), PCA + kNN and the physics
baseline (the study's ``ALL_KINDS``), plus a linear classifier for position-averaged patterns
(``linear``) and the custom CNN on cell stacks (``cnn-stack``, :mod:`~polar4d_lib.models.stack`), the
default model's extra candidates, all behind one estimator interface
(:class:`~polar4d_lib.models.base.PolarizationModel`)."""

from polar4d_lib.models import linear, neural, pca_knn, physics, stack  # noqa: F401  (registers the model classes)
from polar4d_lib.models.base import REGISTRY, PolarizationModel, load_model, register

NETWORK_KINDS = tuple(f"{e}-{h}" for e in ("cnn", "resnet", "vgg") for h in ("cls", "reg", "proto"))
ALL_KINDS = NETWORK_KINDS + ("pca-knn", "physics")
#: The kinds trained as networks (``training.fit``: checkpoints, resumable): the study's and the CNN on cell
#: stacks (N, bins², Qx, Qy), which reads its own input kind (:mod:`polar4d_lib.inputs`).
NEURAL_KINDS = NETWORK_KINDS + (stack.KIND,)
#: Every kind ``create`` and ``polar4d train`` know: the study's, the linear classifier and the stack CNN.
KNOWN_KINDS = ALL_KINDS + ("linear", stack.KIND)


def create(kind: str, **kwargs) -> PolarizationModel:
    """A new, unfitted model of ``kind`` (one of ``KNOWN_KINDS``)."""
    if kind not in REGISTRY:
        raise ValueError(f"unknown model {kind!r}; use one of {', '.join(KNOWN_KINDS)}")
    cls = REGISTRY[kind]
    return cls(kind=kind, **kwargs) if len(cls.kinds) > 1 else cls(**kwargs)


__all__ = ["ALL_KINDS", "KNOWN_KINDS", "NETWORK_KINDS", "NEURAL_KINDS", "PolarizationModel", "REGISTRY", "create", "load_model", "register"]
