"""`python -m harness` is the same as the `asciitune` command."""
import sys

from harness.cli.main import main

sys.exit(main())
