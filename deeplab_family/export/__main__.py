"""`python -m deeplab_family.export`: see `deeplab_family.export.cli`."""

import sys

from deeplab_family.export.cli import main

sys.exit(main())
