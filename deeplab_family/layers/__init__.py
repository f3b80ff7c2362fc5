"""Keras 3 layers, one module per paper component. Importing this package registers them all."""

from deeplab_family.layers.aspp import ASPP, aspp_rates
from deeplab_family.layers.conv import AtrousConv2D, ConvNormAct
from deeplab_family.layers.exfuse import (
    DenselyAdjacentPrediction,
    SemanticEmbeddingBranch,
    SemanticSupervision,
    SubPixelUpsample,
)
from deeplab_family.layers.gcn import BoundaryRefinement, GlobalConvolution
from deeplab_family.layers.pan import FeaturePyramidAttention, GlobalAttentionUpsample
from deeplab_family.layers.resize import CropLike, ResizeLike

__all__ = [
    "ASPP",
    "AtrousConv2D",
    "BoundaryRefinement",
    "ConvNormAct",
    "CropLike",
    "DenselyAdjacentPrediction",
    "FeaturePyramidAttention",
    "GlobalAttentionUpsample",
    "GlobalConvolution",
    "ResizeLike",
    "SemanticEmbeddingBranch",
    "SemanticSupervision",
    "SubPixelUpsample",
    "aspp_rates",
]
