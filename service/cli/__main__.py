import sys

from service.cli import console

sys.exit(console())
