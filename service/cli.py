"""The ``islet-cds`` command: serve, evaluate, decisions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

from service.config import ConfigError, load_settings


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    workers = _worker_count(settings, args.workers)
    if args.dev:
        from service.app import create_app

        create_app().run(host=args.host, port=args.port, debug=False, threaded=True)
        return 0
    from gunicorn.app.base import BaseApplication
    from sqlalchemy.exc import SQLAlchemyError

    # Check the whole configuration (policy, wording, trusted issuers, database) once, in the master:
    # a mistake stops start-up with one clear message instead of every worker crashing.
    from cards.wording import WordingError
    from service.app import build_state
    from service.policy import PolicyError
    from service.records.store import DecisionLog
    from service.trust.issuers import TrustConfigError

    try:
        build_state(settings, date.today, with_records=False)
        # Migrate once in the master, so workers starting together never race on the schema.
        DecisionLog(settings.database_url).migrate()
    except (PolicyError, TrustConfigError, WordingError) as exc:
        print(f"islet-cds: cannot start: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"islet-cds: cannot start: the database (ISLET_CDS_DATABASE_URL) is not usable: {reason}",
              file=sys.stderr)
        return 2

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)  # the app logs one JSON line per request
            self.cfg.set("forwarded_allow_ips", "127.0.0.1")

        def load(self) -> Any:
            import gc

            from service.app import create_app

            app = create_app()
            # The app's long-lived objects (policy, value sets, validators) never become garbage:
            # freezing them keeps full collections from walking ~100k objects on every request burst.
            gc.collect()
            gc.freeze()
            return app

    Server().run()
    return 0


def _worker_count(settings: Any, requested: int | None) -> int:
    """Workers to run. Without Redis the jti replay cache lives in each process, so a replayed token
    could reach another worker: with authentication on, that needs ISLET_CDS_REDIS_URL or one worker."""
    shared_replay_cache = bool(settings.redis_url) or not settings.auth_enabled
    if requested is None:
        return 2 if shared_replay_cache else 1
    if requested > 1 and not shared_replay_cache:
        raise ConfigError(
            f"--workers {requested} with authentication on needs ISLET_CDS_REDIS_URL (a replay cache shared by "
            "all workers); without Redis run one worker (threads still serve concurrent calls)"
        )
    return requested


def _read_input(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return json.loads(text)


def _run_offline(request_body: Any, today: date, policy_overrides: dict[str, Any]) -> Any:
    """The hook pipeline without a server or records (evaluate, gallery): same answer as HTTP."""
    from service.app import build_state
    from service.envelope import parse_hook_request
    from service.errors import ApiError
    from service.pipeline import handle_hook

    settings = load_settings(overrides={"auth": "disabled"})
    app_state = build_state(settings, lambda: today, with_records=False, policy_overrides=policy_overrides)
    hook = request_body.get("hook") if isinstance(request_body, dict) else None
    service = app_state.catalogue.for_hook(str(hook))
    if service is None:
        raise ApiError(400, "not-supported", f"No service answers the hook {hook!r}.", "hook")
    request = parse_hook_request(service.id, service.hook, request_body)
    return handle_hook(app_state, request, None, record=False)


def _unwrap_scenario(document: Any, today: date | None) -> tuple[Any, date, dict[str, Any]]:
    """A scenario file from fhir_fixtures/ wraps the request with its clock and policy switches."""
    overrides: dict[str, Any] = {}
    if isinstance(document, dict) and "request" in document and "hook" not in document:
        overrides = document.get("policy_overrides") or {}
        if today is None and document.get("today"):
            today = date.fromisoformat(document["today"])
        document = document["request"]
    return document, today or date.today(), overrides


def _evaluate(args: argparse.Namespace) -> int:
    from service.errors import ApiError
    from service.policy.report import decision_table

    try:
        document = _read_input(args.file)
    except (OSError, ValueError) as exc:
        print(f"islet-cds evaluate: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    request_body, today, overrides = _unwrap_scenario(document, date.fromisoformat(args.today) if args.today else None)
    try:
        result = _run_offline(request_body, today, overrides)
    except ApiError as exc:
        print(json.dumps(exc.outcome(), indent=2), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.body, indent=2))
        return 0
    if not result.decisions:
        print("No order in this request is covered by the policy: no decision (response: no cards).")
        return 0
    print(decision_table(result.decisions))
    for card in result.body.get("cards", []):
        print(f"[{card['indicator']}] {card['summary']}")
    return 0


# The gallery's cases: fixture scenarios that show each kind of answer (issue 5).
GALLERY_SCENARIOS = (
    ("Criteria met (allogeneic, S2102)", "allo-s2102-all-met"),
    ("Not met: kidney transplant on record", "allo-kidney-transplant"),
    ("Documentation needed: no diabetes education on record", "allo-no-education"),
    ("Excluded: bioartificial pancreas device", "excl-bioartificial-pancreas"),
    ("Multi-order: G0341 + Lantidra + tacrolimus + a glucose test", "allo-route-g0341-with-lantidra"),
    ("Autologous: total pancreatectomy with islet autotransplant, criteria met", "auto-48160-covered"),
)


def _gallery(args: argparse.Namespace) -> int:
    from cards.gallery import GalleryEntry, gallery_html

    entries = []
    for title, name in GALLERY_SCENARIOS:
        scenario = _read_input(str(Path(args.fixtures) / f"{name}.json"))
        result = _run_offline(*_unwrap_scenario(scenario, None))
        entries.append(GalleryEntry(f"{title} — fhir_fixtures/scenarios/{name}.json", result.body))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(gallery_html(entries), encoding="utf-8")
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="islet-cds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service under gunicorn (production WSGI server)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (default 2; 1 with authentication on and no ISLET_CDS_REDIS_URL)")
    serve.add_argument("--threads", type=int, default=4, help="threads per worker (FHIR fallback waits on I/O)")
    serve.add_argument("--dev", action="store_true", help="Flask's development server (never in production)")
    serve.set_defaults(func=_serve)

    evaluate = sub.add_parser("evaluate", help="run the hook pipeline on a CDS Hooks request JSON, without a server")
    evaluate.add_argument("file", help="request JSON file (or a fhir_fixtures scenario), or - for standard input")
    evaluate.add_argument("--json", action="store_true", help="print the CDS Hooks response body")
    evaluate.add_argument("--today", help="date of evaluation (YYYY-MM-DD) when the order gives none")
    evaluate.set_defaults(func=_evaluate)

    gallery = sub.add_parser("gallery", help="write the card gallery (HTML) from fixture scenarios")
    gallery.add_argument("--out", default="docs/gallery.html")
    gallery.add_argument("--fixtures", default="fhir_fixtures/scenarios", help="scenario folder")
    gallery.set_defaults(func=_gallery)

    from service.records.cli import add_subcommands

    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"islet-cds: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`islet-cds decisions export | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
