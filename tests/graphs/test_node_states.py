"""The node-state vocabulary is written once (``walker.NodeState``); every other spelling
of it (database choices, graph document status, WebSocket ``nodeStatus``, job status) is
checked here against that one list and against the JSON Schemas clients read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from django.conf import settings

from apps.graphs.document import DOCUMENT_STATUS, NodeStatus
from apps.graphs.walker import ACTIVE_STATES, NODE_STATES, TERMINAL_STATES
from apps.jobs.consumers import NODE_STATUS
from apps.jobs.models import Job, NodeRun


def _schema(name: str) -> dict:
    return json.loads((Path(settings.BASE_DIR) / "schemas" / name).read_text())


def test_database_choices_are_the_walker_states() -> None:
    assert list(NodeRun.Status.values) == list(NODE_STATES)
    assert set(NodeRun.TERMINAL) == TERMINAL_STATES
    assert TERMINAL_STATES.isdisjoint(ACTIVE_STATES)
    assert TERMINAL_STATES | ACTIVE_STATES | {"pending"} == set(NODE_STATES)


def test_every_state_reads_as_a_status_of_the_graph_schema() -> None:
    schema_statuses = _schema("graph.schema.json")["$defs"]["node"]["properties"]["status"]
    assert set(get_args(NodeStatus)) == set(schema_statuses["enum"])
    assert set(DOCUMENT_STATUS) == set(NODE_STATES)
    assert set(DOCUMENT_STATUS.values()) <= set(schema_statuses["enum"])


def test_websocket_node_status_covers_every_node_event_of_the_event_schema() -> None:
    event_types = _schema("job-event.schema.json")["properties"]["type"]["enum"]
    assert set(NODE_STATUS) == {t for t in event_types if t.startswith("node.")}
    assert set(NODE_STATUS.values()) <= set(NODE_STATES)


def test_job_statuses_match_the_event_schema() -> None:
    job_status = _schema("job-event.schema.json")["properties"]["job_status"]["enum"]
    assert list(Job.Status.values) == job_status
    assert set(Job.FINISHED) == {"completed", "failed", "cancelled"}
