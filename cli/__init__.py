"""The ``mrisynth`` command line, the top floor: it calls into mrisynth, models, worker and service, and
none of them imports it. Entry point :func:`cli.main.main`; one module per group of subcommands."""
