"""A job posted in the original system's form, on its page: both names are shown, and
node ids that are object-property names in JavaScript (``__proto__``, which the original
allowed and is a safe key here) stay plain ids: the layout once drew nothing for them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from apps.graphs.original import storage_key
from apps.jobs import submission
from tests.web.conftest import Tab, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_job_page_shows_the_original_ids_and_services(open_tab: Callable[..., Tab]) -> None:
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    job = submission.submit(
        ada,
        graph={
            "schema": "langgraph.v1",
            "workflowId": "w",
            "nodes": [
                {"id": "__proto__", "task": "dummy.dummy_task", "plane": "python",
                 "status": "pending", "input": None},
                {"id": "../constructor", "task": "dummy.dummy_task", "plane": "python",
                 "status": "pending", "tags": None},
            ],
            "edges": [{"from": "__proto__", "to": "../constructor", "kind": "normal"}],
        },
    )  # fmt: skip
    key = storage_key("../constructor")
    tab = open_tab()
    sign_in(tab, "ada", "ada-secret-pw")

    tab.go(f"/jobs/{job.pk}/")
    tab.page.locator(f"#dag [data-node-id='{key}'] title").wait_for(state="attached")
    shown = tab.page.eval_on_selector_all(
        "#dag [data-node-id]",
        "els => els.map(el => [el.dataset.nodeId, el.querySelector('.name').textContent,"
        " el.querySelector('title').textContent])",
    )

    assert [(node_id, name) for node_id, name, _ in shown] == [
        ("__proto__", "__proto__"),
        (key, "../constructor"),
    ]
    assert all("(debug.noop, the original's dummy.dummy_task)" in title for *_, title in shown)
    assert tab.page.evaluate("() => Object.prototype.service === undefined")
    assert tab.errors == []
