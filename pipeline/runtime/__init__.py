"""Running stages: the consume-process-produce loops, drain mode, and `run all`."""
