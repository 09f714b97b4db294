"""polar4d's use of torchvision, imported through polar4d_lib._torchvision_compat (a CPU torch with the CUDA
torchvision wheel): the encoders polar4d builds from torchvision's ResNet and VGG run on its 1-channel
patterns, and its augmentation's blur and jitter are torchvision.transforms.v2's."""

import sys

import pytest
import torch

from polar4d_lib import augmentation
from polar4d_lib._torchvision_compat import import_torchvision
from polar4d_lib.models import networks


def test_import_returns_torchvision_and_is_idempotent():
    tv = import_torchvision()
    assert tv.__name__ == "torchvision"
    assert sys.modules["torchvision"] is tv
    assert import_torchvision() is tv  # a second call is a no-op: the same module object
    import torchvision  # after the compat import, a plain import works and is the same module

    assert torchvision is tv


@pytest.mark.parametrize("encoder, depth, features", [("resnet", 18, 512), ("vgg", 11, 512)])
def test_polar4d_encoders_from_torchvision_run_on_one_channel_patterns(encoder, depth, features):
    """networks.resnet / networks.vgg take torchvision's architectures with a 1-channel first convolution;
    every head of a PolarNet built on them gives its outputs for a batch of patterns."""
    torch.manual_seed(0)
    module, n_features = networks.make_encoder(encoder, depth, size=48)
    assert n_features == features
    first_conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        assert module.eval()(x).shape == (2, features)
        for head, width in networks.HEAD_OUTPUTS.items():
            net = networks.build_network(encoder, depth, head, size=48).eval()
            out = net(x)
            assert out.shape == (2, width) and torch.isfinite(out).all(), head


def test_augmentation_blur_is_transforms_v2_gaussian_blur():
    """augmentation.gaussian_blur (one σ per image, batched) equals v2.functional.gaussian_blur per image."""
    import_torchvision()
    from torchvision.transforms import v2

    torch.manual_seed(1)
    x = torch.rand(3, 1, 20, 20)
    sigmas = torch.tensor([0.6, 1.0, 1.7])
    k = augmentation.blur_kernel_size(float(sigmas.max()), (20, 20))
    ours = augmentation.gaussian_blur(x, sigmas)
    for i in range(3):
        theirs = v2.functional.gaussian_blur(x[i], kernel_size=[k, k], sigma=[float(sigmas[i])] * 2)
        torch.testing.assert_close(ours[i], theirs, atol=1e-5, rtol=1e-5)


def test_augmenter_runs_its_transforms_v2_steps_on_a_batch():
    """The augmenter polar4d trains with (blur, brightness/contrast jitter through v2.functional, noise)
    returns a batch of the same shape, changes the images and keeps the labels without D4."""
    cfg = augmentation.AugmentationConfig(blur_p=1.0, jitter_p=1.0, noise_p=1.0)  # every step, every image
    augmenter = augmentation.Augmenter(cfg)
    x = torch.rand(4, 1, 32, 32)
    y = torch.tensor([0, 1, 2, 3])
    generator = torch.Generator().manual_seed(0)
    x_aug, y_aug = augmenter(x, y, generator)
    assert x_aug.shape == x.shape and x_aug.dtype == x.dtype and torch.isfinite(x_aug).all()
    assert y_aug.shape == y.shape
    assert not torch.equal(x_aug, x)
