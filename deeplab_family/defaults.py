"""Facts shared by layers, backbones, configs and tools, each stated once with its source.

Free of TensorFlow and Keras, so configs and the TFRecord builders can import it.
"""

# DeepLabv3 Sec 4.1: "batch normalization ... with decay = 0.9997"; epsilon as research/deeplab
# and Model Garden's DeepLab configs (1e-5).
BN_MOMENTUM = 0.9997
BN_EPSILON = 1e-5

# Output strides a backbone without cascaded blocks can be built at, and evaluated at:
# res5 at 1/4 (ASPP rates x4, evaluation only: DeepLabv3 Appendix C mentions it) to 1/32.
OUTPUT_STRIDES = (4, 8, 16, 32)
# Exported models: OS4 quadruples the res3..res5 maps and is not a serving setting.
EXPORT_OUTPUT_STRIDES = (8, 16, 32)
