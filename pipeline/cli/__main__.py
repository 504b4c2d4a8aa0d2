"""``python -m pipeline.cli`` runs the ``o2o`` command line."""

from pipeline.cli.main import main

main()
