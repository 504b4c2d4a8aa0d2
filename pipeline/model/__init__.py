"""The event contract and the rows the pipeline writes, shared by every stage."""
