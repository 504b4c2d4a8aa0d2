"""What the fork server of ``o2o run all`` imports once for every stage it forks (stage_child.py).

Only imports: nothing here starts a thread, a client or an event loop, so a
fork of the server starts clean.
"""

import pipeline.activation.stage
import pipeline.attribution.stage
import pipeline.cli.main
import pipeline.identity.stage
import pipeline.ingest.stage
import pipeline.journeys.stage
import pipeline.metrics
import pipeline.runtime.confluent_stage
import pipeline.runtime.faust_stage
import pipeline.runtime.stages
import pipeline.sink.stage  # noqa: F401
