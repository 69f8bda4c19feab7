"""`python -m harness` is the same as the `asciitune` command."""
import sys

from harness.cli import main

sys.exit(main())
