"""What the fork server of ``o2o run all`` imports once for every stage it forks (stage_child.py).

Imports, and one signal disposition: nothing here starts a thread, a client
or an event loop, so a fork of the server starts clean. The server ignores
SIGTERM, as multiprocessing has it ignore SIGINT: a signal to the whole
process group (a test stopping `run all`, a terminal closing) reaches it as
well as the stages, and a server gone before the stages would leave `run all`
without their exit statuses (255 for each, at once, while they still shut
down). It ends when `run all` stops it or exits. The stages set both signals
back to their defaults (stage_child.run_child).
"""

import signal

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

signal.signal(signal.SIGTERM, signal.SIG_IGN)
