"""``python -m mrisynth``: the same command line as the ``mrisynth`` console script."""

from mrisynth.cli import main

main()
