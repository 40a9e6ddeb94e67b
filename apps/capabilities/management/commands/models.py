"""``manage.py models list|fetch|verify|remove``: the weights of the model manifest.

``list`` shows each model's state (present, missing, corrupt), size, licence and the
services that use it; ``fetch NAME...`` shows the licence, asks for its acceptance
(``--accept-licence`` answers yes) and downloads into ``MYSPINBOT_MODEL_ROOT`` from
``HF_ENDPOINT``, resumably, sha256-checked; ``verify`` hashes what is installed; ``remove``
deletes a model's files. Exit status 1 when a fetch fails or a verify finds damage.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from myspinbot.model_store import ModelEntry, ModelState, ModelStore, default_store


def _size(value: int | None) -> str:
    if value is None:
        return "size not pinned"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _licence(entry: ModelEntry) -> str:
    return f"{entry.licence['name']} ({entry.licence['url']})"


class Command(BaseCommand):
    help = "List, fetch, verify or remove the models of the manifest in MYSPINBOT_MODEL_ROOT."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="each model's state, size and licence")
        listing.add_argument("--json", action="store_true", help="machine-readable output")
        fetch = actions.add_parser("fetch", help="download and verify models from the hub")
        fetch.add_argument("names", nargs="*", help="model names (see `models list`)")
        fetch.add_argument("--all", action="store_true", help="every required model")
        fetch.add_argument(
            "--accept-licence",
            action="store_true",
            help="accept the licences shown (otherwise asked on a terminal)",
        )
        fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
        verify = actions.add_parser("verify", help="hash installed files against the manifest")
        verify.add_argument("names", nargs="*", help="model names (default: every model on disk)")
        remove = actions.add_parser("remove", help="delete a model's files")
        remove.add_argument("names", nargs="+", help="model names")

    def handle(self, *args: Any, **options: Any) -> None:
        store = default_store()
        action = options["action"]
        names = options.get("names") or []
        try:
            entries = [store.entry(name) for name in names]
        except KeyError as error:
            raise CommandError(str(error.args[0])) from None
        if action == "list":
            self.show(store.states(), as_json=options["json"])
        elif action == "fetch":
            if options["all"]:
                entries = [e for e in store.manifest.values() if not e.optional]
            if not entries:
                raise CommandError("name the models to fetch (see `models list`), or --all")
            self.fetch(store, entries, options["accept_licence"], not options["no_progress"])
        elif action == "verify":
            self.verify(store, entries)
        else:
            for entry in entries:
                freed = store.remove(entry)
                self.stdout.write(f"{entry.name}: removed, {_size(freed)} freed")

    def show(self, states: list[ModelState], *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps([s.to_json() for s in states], indent=1))
            return
        for state in states:
            entry = state.entry
            pinned = "pinned" if entry.pinned else "not pinned"
            self.stdout.write(
                f"{entry.name:<28} {state.state:<8} {_size(entry.size_bytes)} "
                f"({_size(state.size_bytes)} on disk), {pinned}"
            )
            self.stdout.write(f"    {entry.repo_id} -> {entry.folder}; licence {_licence(entry)}")
            self.stdout.write(f"    used by {', '.join(entry.services)}")
            if state.state != "present":
                self.stdout.write(f"    {state.detail}; run: {state.command}")

    def _accepted(self, entries: list[ModelEntry], accept: bool) -> None:
        for entry in entries:
            self.stdout.write(f"{entry.name}: {entry.title} from {entry.repo_id}")
            self.stdout.write(f"    licence: {_licence(entry)}")
            if entry.note:
                self.stdout.write(f"    note: {entry.note}")
        if accept:
            return
        if not sys.stdin.isatty():
            raise CommandError(
                "read the licences above and rerun with --accept-licence to accept them"
            )
        if input("Accept these licences? [y/N] ").strip().lower() not in ("y", "yes"):
            raise CommandError("licence not accepted: nothing fetched")

    def fetch(
        self, store: ModelStore, entries: list[ModelEntry], accept: bool, progress: bool
    ) -> None:
        from apps.capabilities import model_fetch

        try:
            model_fetch.refuse_if_offline()
        except model_fetch.FetchError as error:
            raise CommandError(str(error)) from None
        self._accepted(entries, accept)
        for entry in entries:
            self.stdout.write(f"{entry.name}: fetching into {store.folder(entry)}")
            try:
                model_fetch.fetch(store, entry, say=self.stdout.write, progress=progress)
            except model_fetch.FetchError as error:
                again = "" if error.retryable else " (running it again will not help as is)"
                raise CommandError(f"{entry.name}: {error}{again}") from None
            state = store.state(entry)
            self.stdout.write(f"{entry.name}: {state.state}")
            if state.state != "present":
                raise CommandError(f"{entry.name}: {state.state} after fetch: {state.detail}")

    def verify(self, store: ModelStore, entries: list[ModelEntry]) -> None:
        if not entries:
            entries = [
                e
                for e in store.manifest.values()
                if any(f.size_bytes for f in store.state(e).files)
            ]
        damaged = []
        for entry in entries:
            revision = entry.revision or f"not pinned ({store.record(entry).get('revision', '?')})"
            self.stdout.write(f"{entry.name}: revision {revision}")
            for result in store.verify(entry):
                self.stdout.write(f"    {result.path}: {result.result}: {result.message}")
                if result.result != "ok":
                    damaged.append(f"{entry.name}/{result.path} {result.result}")
        if damaged:
            raise CommandError(
                "not verified: " + ", ".join(damaged) + "; `python manage.py models fetch` "
                "downloads missing and corrupt files again"
            )
        self.stdout.write(f"verified {len(entries)} models")
