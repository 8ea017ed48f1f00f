"""Regenerates the README's optimizer table from the registry: ``python -m gradtx.readme_table [README.md]``."""

import sys

from gradtx import registry

if __name__ == "__main__":
  registry.update_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md")
