"""Importing torchvision through polar4d_lib._torchvision_compat (CPU torch, CUDA torchvision wheel)."""

import sys

import torch

from polar4d_lib._torchvision_compat import import_torchvision


def test_import_returns_torchvision_and_is_idempotent():
    tv = import_torchvision()
    assert tv.__name__ == "torchvision"
    assert sys.modules["torchvision"] is tv
    assert import_torchvision() is tv  # a second call is a no-op: the same module object
    import torchvision  # after the compat import, a plain import works and is the same module

    assert torchvision is tv


def test_resnet18_forward_with_one_channel_input():
    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None, num_classes=8)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 8)
    assert torch.isfinite(out).all()


def test_transforms_v2_blur_runs_and_conserves_a_flat_image():
    import_torchvision()
    from torchvision.transforms import v2

    flat = torch.full((1, 16, 16), 0.25)
    assert torch.allclose(v2.GaussianBlur(5, sigma=1.0)(flat), flat)
    spike = torch.zeros(1, 16, 16)
    spike[0, 8, 8] = 1.0
    blurred = v2.functional.gaussian_blur(spike, kernel_size=[9, 9], sigma=[1.5, 1.5])
    assert blurred.shape == spike.shape
    assert abs(float(blurred.sum()) - 1.0) < 1e-5  # the kernel is normalised; nothing reaches the edge
    assert float(blurred[0, 8, 8]) < 0.1 and float(blurred[0, 8, 8]) == float(blurred.max())
