"""Session-wide test set-up."""

from deit._torchvision_compat import ensure_torchvision_importable

# CPU torch wheels have no matching torchvision build; transformers and timm import torchvision.
ensure_torchvision_importable()
