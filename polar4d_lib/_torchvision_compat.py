"""Import torchvision on a CPU-only torch (see shared ENVIRONMENT.md) — the one place that knows.

torchvision 0.28.0 from PyPI is a CUDA build; on the CPU wheel of torch 2.13.0 its C extension does not
load, and ``torchvision/_meta_registrations.py`` then dies registering fake kernels for the missing
``torchvision::nms``/``qnms`` ops (``RuntimeError: operator torchvision::nms does not exist``). While
importing torchvision we make ``torch.library.register_fake`` skip operators that do not exist, only in
that situation; models, ``transforms.v2`` and ``io`` work, the C++ ops (nms, roi_pool, …) stay missing
and polar4d needs none. Where torchvision imports normally this does nothing.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import torch


def _op_exists(name: str) -> bool:
    namespace, _, op = name.partition("::")
    try:
        getattr(getattr(torch.ops, namespace), op.split(".")[0])
        return True
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def _tolerate_missing_ops() -> Iterator[None]:
    original = torch.library.register_fake

    def register_fake(op: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(op, str) and not _op_exists(op):
            return lambda fn: fn  # the op's C kernel is absent: nothing to register a fake for
        return original(op, *args, **kwargs)

    torch.library.register_fake = register_fake
    try:
        yield
    finally:
        torch.library.register_fake = original


def import_torchvision() -> Any:
    """``torchvision``, imported so that a missing C extension does not stop it."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        with _tolerate_missing_ops():
            import torchvision
    return torchvision
