"""`python -m deeplab_family.weights`: see `deeplab_family.weights.cli`."""

import sys

from deeplab_family.weights.cli import main

sys.exit(main())
