"""Operators' commands: ``islet-cds decisions show|export|purge`` on the database of ISLET_CDS_DATABASE_URL."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from service.config import load_settings
from service.records.store import DecisionLog


def parse_since(value: str) -> datetime:
    """A date (YYYY-MM-DD, midnight UTC) or an ISO 8601 date-time (no offset = UTC)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or date-time: {value!r} (use YYYY-MM-DD)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _non_negative_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError("days must be zero or more")
    return days


def add_subcommands(subparsers: Any) -> None:
    """Add ``decisions show|export|purge`` to the ``islet-cds`` parser's subparsers."""
    decisions = subparsers.add_parser("decisions", help="read, export or purge the decision log")
    actions = decisions.add_subparsers(dest="decisions_command", required=True)

    show = actions.add_parser("show", help="print the decisions (and calls) of a record id, coverage-assertion-id "
                                           "or hookInstance as JSON")
    show.add_argument("key", metavar="ID", help="decision record id, coverage-assertion-id or hookInstance")
    show.set_defaults(func=run)

    export = actions.add_parser("export", help="write calls, decisions and feedback since a date as JSON lines")
    export.add_argument("--since", required=True, type=parse_since, help="YYYY-MM-DD or ISO date-time (UTC)")
    export.add_argument("--out", type=Path, help="output file (default: standard output)")
    export.set_defaults(func=run)

    purge = actions.add_parser("purge", help="delete records older than a number of days")
    purge.add_argument("--older-than", required=True, type=_non_negative_days, metavar="DAYS")
    purge.add_argument("--yes", action="store_true", help="really delete (without it: only count)")
    purge.set_defaults(func=run)


def _show(log: DecisionLog, args: argparse.Namespace, out: TextIO) -> int:
    decisions = log.get(args.key)
    hook_instances = sorted({d["hook_instance"] for d in decisions} | {args.key})
    calls = [c for h in hook_instances for c in log.invocations(h)]
    if not decisions and not calls:
        print(f"islet-cds: no decision or call recorded for {args.key!r}", file=sys.stderr)
        return 1
    json.dump({"decisions": decisions, "invocations": calls}, out, indent=2)
    out.write("\n")
    return 0


def _write_lines(log: DecisionLog, since: datetime, out: TextIO) -> int:
    count = 0
    for record in log.export(since):
        out.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        out.write("\n")
        count += 1
    return count


def _export(log: DecisionLog, args: argparse.Namespace, out: TextIO) -> int:
    if args.out is None:
        _write_lines(log, args.since, out)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        count = _write_lines(log, args.since, handle)
    print(f"exported {count} records to {args.out}", file=sys.stderr)
    return 0


def _purge(log: DecisionLog, args: argparse.Namespace, out: TextIO) -> int:
    if not args.yes:
        count = log.count_older_than(args.older_than)
        print(f"{count} records are older than {args.older_than} days; run again with --yes to delete them.",
              file=out)
        return 0
    deleted = log.purge(args.older_than)
    print(f"deleted {deleted} records older than {args.older_than} days", file=out)
    return 0


_COMMANDS: dict[str, Callable[[DecisionLog, argparse.Namespace, TextIO], int]] = {
    "show": _show,
    "export": _export,
    "purge": _purge,
}


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a ``decisions`` subcommand; returns the exit status."""
    settings = load_settings()
    log = DecisionLog(settings.database_url)
    try:
        # The schema is brought up to date first, so a fresh or older database answers too.
        log.migrate()
        return _COMMANDS[args.decisions_command](log, args, out or sys.stdout)
    finally:
        log.dispose()
