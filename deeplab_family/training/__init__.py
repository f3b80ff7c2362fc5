"""Training: losses, the poly schedule, the streaming mIoU, checkpoints and the distributed loop.

Import the modules you need (`from deeplab_family.training import loop`); nothing is imported
here, so `checkpoints` stays cheap for the readers (evaluate, export).
"""
