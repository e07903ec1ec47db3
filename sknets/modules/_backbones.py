"""Image backbones implemented in plain PyTorch (no torchvision needed).

- :class:`SqueezeNet11`: SqueezeNet v1.1 (Iandola et al., 2016), laid out like
  the Keras ``keras-squeezenet`` model whose ImageNet weights sknets bundles,
  converted (``'valid'`` max pooling, Caffe-style BGR mean-subtraction
  preprocessing).
- :class:`CifarResNet`: the 3-stage CIFAR ResNet of He et al. (2015) with
  option-A (zero-padded identity) shortcuts; :func:`resnet20_cifar` and
  :func:`resnet56_cifar` load the widely used ``pytorch_resnet_cifar10``
  checkpoints after ``module.`` prefixes are stripped.

Every backbone carries a ``preprocessing`` dict (``input_size``, ``mean``,
``std``, ``pixel_scale``, ``channel_order``) that says how images in ``[0, 1]``
must be prepared for it; :class:`sknets.PretrainedFeatureExtractor` applies it.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe/Keras ImageNet mean pixel, BGR order, on the 0-255 scale.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated.

    Parameters
    ----------
    in_channels, squeeze, expand : int
        Input channels, squeeze channels and channels of each expand branch
        (the output has ``2 * expand`` channels).
    """

    def __init__(self, in_channels, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, kernel_size=1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, kernel_size=3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    """SqueezeNet v1.1 convolutional trunk, optionally with a classifier.

    Parameters
    ----------
    num_classes : int or None, default=None
        None gives the trunk followed by global average pooling (512
        features), the layout of the ImageNet "no top" weights; an int adds
        SqueezeNet's dropout + 1x1 convolution classifier.

    Attributes
    ----------
    features : torch.nn.Sequential
        ``conv1, relu1, pool1, fire2, fire3, pool3, fire4, fire5, pool5,
        fire6, ..., fire9``.
    preprocessing : dict
        224x224 RGB in; ``x * 255`` in BGR order minus the Caffe mean pixel.

    Examples
    --------
    >>> import torch
    >>> from sknets.modules import SqueezeNet11
    >>> SqueezeNet11()(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 512])
    """

    preprocessing = {
        "input_size": (3, 224, 224),
        "mean": CAFFE_BGR_MEAN,
        "std": (1.0, 1.0, 1.0),
        "pixel_scale": 255.0,
        "channel_order": "BGR",
    }
    num_features = 512

    def __init__(self, num_classes=None):
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(3, 64, kernel_size=3, stride=2)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(3, stride=2)),
                    ("fire2", Fire(64, 16, 64)),
                    ("fire3", Fire(128, 16, 64)),
                    ("pool3", nn.MaxPool2d(3, stride=2)),
                    ("fire4", Fire(128, 32, 128)),
                    ("fire5", Fire(256, 32, 128)),
                    ("pool5", nn.MaxPool2d(3, stride=2)),
                    ("fire6", Fire(256, 48, 192)),
                    ("fire7", Fire(384, 48, 192)),
                    ("fire8", Fire(384, 64, 256)),
                    ("fire9", Fire(512, 64, 256)),
                ]
            )
        )
        self.num_classes = num_classes
        if num_classes is not None:
            self.classifier = nn.Sequential(
                nn.Dropout(0.5),
                nn.Conv2d(512, num_classes, kernel_size=1),
                nn.ReLU(),
            )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        x = self.features(x)
        if self.num_classes is not None:
            x = self.classifier(x)
        return self.pool(x)


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the new channels."""

    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an option-A identity shortcut."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3-stage ResNet for 32x32 images (He et al., 2015, section 4.2).

    Parameters
    ----------
    num_blocks : sequence of 3 int
        Basic blocks per stage: ``(3, 3, 3)`` is ResNet-20, ``(9, 9, 9)``
        ResNet-56.
    num_classes : int or None, default=10
        Width of the final ``linear`` layer; None leaves it out (64 pooled
        features out).

    Attributes
    ----------
    preprocessing : dict
        32x32 RGB in, ImageNet mean/std normalization.

    Examples
    --------
    >>> import torch
    >>> from sknets.modules import resnet20_cifar
    >>> resnet20_cifar()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    preprocessing = {
        "input_size": (3, 32, 32),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "pixel_scale": 1.0,
        "channel_order": "RGB",
    }
    num_features = 64

    def __init__(self, num_blocks=(3, 3, 3), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, (planes, n) in enumerate(zip((16, 32, 64), num_blocks, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_classes = num_classes
        if num_classes is not None:
            self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        if self.num_classes is not None:
            x = self.linear(x)
        return x


def resnet20_cifar(num_classes=10):
    """ResNet-20 for CIFAR (0.27M parameters)."""
    return CifarResNet((3, 3, 3), num_classes)


def resnet56_cifar(num_classes=10):
    """ResNet-56 for CIFAR (0.85M parameters)."""
    return CifarResNet((9, 9, 9), num_classes)


# name -> (factory, name of its default weight set in sknets._weights)
BACKBONES = {
    "squeezenet1_1": (SqueezeNet11, "squeezenet1_1_imagenet"),
    "resnet20_cifar": (resnet20_cifar, "resnet20_cifar10"),
    "resnet56_cifar": (resnet56_cifar, "resnet56_cifar10"),
}
