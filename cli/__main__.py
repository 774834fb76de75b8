"""``python -m cli``: the same command line as the ``mrisynth`` console script."""

from cli.main import main

main()
