"""Keras 3 layers, one module per paper component. Importing this package registers them all."""

from deeplab_family.layers.conv import AtrousConv2D, ConvNormAct
from deeplab_family.layers.resize import ResizeLike

__all__ = ["AtrousConv2D", "ConvNormAct", "ResizeLike"]
