"""``python -m pipeline.cli`` runs the ``o2o`` command line."""

from pipeline.cli.main import main

if __name__ == "__main__":  # not when a fork server imports the parent's main module
    main()
