"""`python -m deeplab_family.serve`: see `deeplab_family.serve.cli`."""

import sys

from deeplab_family.serve.cli import main

sys.exit(main())
