"""The benchmark: seed `billing_bench`, count queries, load-test gunicorn with wrk beside pgbench on
the same SQL, profile, check the scale targets, write bench/results/raw/<date>.json (not in git),
bench/results/<date>-<profile>.md and the results block of bench/README.md.

    .venv/bin/python bench/run.py --profile quick    # make bench: 10 x 5k invoices, short runs
    .venv/bin/python bench/run.py --profile full     # make bench-full: 10 x 100k invoices and 1 x 100k

Options: --reseed (drop and seed even when the data is there), --workers N (skip the choice),
--sweep-workers (measure 2, 4 and 5 workers and take the best; always on in full), --no-profile,
--port N (gunicorn's port; default: a free one), --label NAME (the summary's file name),
--worker-class sync|gthread|gevent (default sync, as every earlier run; --threads N for gthread),
--serving [CONFIGS] (instead of the load run: the gunicorn configurations compared, see
`serving_comparison`). The database is `billing_bench`, or BENCH_DATABASE.

    .venv/bin/python bench/run.py --serving                       # the six configurations, 2 rounds
    .venv/bin/python bench/run.py --serving sync-2,gevent-2 --endpoints ping,pdf --duration 1  # smoke
"""

# Here: the load run, the scale checks and main. The rest: config.py (profiles, environment),
# dataset.py (seeding or reusing `billing_bench`), capture.py (the Django side: tokens, API keys, query counts,
# pgbench scripts), seed.py, inproc.py, load.py and report.py.

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import load, report  # noqa: E402
from bench.capture import (  # noqa: E402
    api_keys,
    create_body,
    credential,
    event_nonce,
    pgbench_scripts,
    pools,
    query_counts,
    stored_documents,
    tokens,
)
from bench.config import (  # noqa: E402
    DB_NAME,
    DEFAULT_WORKERS_PER_CORE,
    ENDPOINTS,
    PROFILES,
    RAW_RESULTS,
    RESULTS,
    WORK,
    Profile,
    _pg,
    bench_env,
    check_tools,
    log,
    machine,
)
from bench.dataset import _db_exists, _same_plan, ensure_dataset, verify_ledger  # noqa: E402
from bench.seed import Plan, restore, seeded_plan  # noqa: E402
from bench.triggers import trigger_cost  # noqa: E402
from tests.live.server import HOST, free_port  # noqa: E402

# --- the load run -------------------------------------------------------------------------------


def wrk_spec(name: str, ctx: dict, workdir: Path) -> dict:
    return {"base_url": f"http://{HOST}:{ctx['port']}", **_request_spec(name, ctx, workdir)}


def _request_spec(name: str, ctx: dict, workdir: Path) -> dict:
    token = credential(ctx, name)
    if name in ("ping", "ping_key"):
        return {"mode": "get", "path": "/bench/ping/", "token": token}
    if name == "me":
        return {"mode": "get", "path": "/api/me/", "token": token}
    if name == "customers":
        return {"mode": "get", "path": "/api/customers/", "token": token}
    if name in ("list20", "list100"):
        return {"mode": "get", "path": f"/api/invoices/?page_size={name[4:]}", "token": token}
    if name == "summary":
        return {"mode": "get", "path": "/api/invoices/summary/", "token": token}
    if name == "detail":
        pool = workdir / "pool_detail.txt"
        pool.write_text("\n".join(map(str, ctx["pools"]["detail"])) + "\n")
        return {"mode": "detail", "path": "/api/invoices/", "token": token, "pool": pool}
    if name in ("pdf", "hosted"):  # one of the invoices whose PDF is stored, at random
        pool = workdir / f"pool_{name}.txt"
        values = ctx["pools"]["pdf"] if name == "pdf" else ctx["hosted_tokens"]
        pool.write_text("\n".join(map(str, values)) + "\n")
        path = "/api/invoices/%s/pdf/" if name == "pdf" else "/i/%s/"
        return {"mode": "pick", "path": path, "token": token, "pool": pool}
    if name == "create":
        body = json.dumps(create_body(ctx["customer"]))
        return {"mode": "create", "path": "/api/invoices/", "token": token, "body": body}
    pool = workdir / "pool_pay.txt"
    pool.write_text("\n".join(map(str, ctx["pools"]["pay"])) + "\n")
    body = '{"invoice": %s, "amount": "0.01", "method": "card"}'
    return {"mode": "payment", "path": "/api/payments/", "token": token, "pool": pool, "body": body}


def gunicorn(
    ctx: dict, workers: int, workdir: Path, *, worker_class: str | None = None, threads: int | None = None
):
    """gunicorn with `workers` workers of the run's class (ctx, --worker-class) unless one is given."""
    if worker_class is None:
        worker_class, threads = ctx["worker_class"], ctx["threads"]
    return load.gunicorn(
        workers=workers,
        port=ctx["port"],
        env=os.environ | bench_env(),
        log=workdir / "gunicorn.log",
        worker_class=worker_class,
        threads=threads,
    )


# --- the serving comparison (issue 17) ------------------------------------------------------------

# Each configuration: (worker class, workers, threads a worker). gevent is gunicorn.conf.py as
# shipped (its request slots, GUNICORN_REQUEST_SLOTS a worker); sync and gthread override its class.
SERVING_CONFIGS = {
    "sync-2": ("sync", 2, None),
    "sync-3": ("sync", 3, None),
    "gthread-2x4": ("gthread", 2, 4),
    "gthread-3x2": ("gthread", 3, 2),
    "gevent-2": ("gevent", 2, None),
    "gevent-3": ("gevent", 3, None),
}
SERVING_ENDPOINTS = ("ping", "me", "list20", "payment", "pdf")
SERVING_CONNECTIONS = 16


def serving_comparison(
    ctx: dict, configs: list[str], endpoints: list[str], duration: int, workdir: Path, rounds: int = 2
) -> dict:
    """req/s and p99 of `endpoints` at 16 connections under each gunicorn configuration of `configs`
    (SERVING_CONFIGS), in interleaved rounds (every configuration once, then again), so that a burst
    of outside load hits each alike. Per endpoint, a configuration keeps its best round's req/s, with
    that round's p99; they are ranked by the geometric mean of those req/s. A non-2xx answer stops
    the run, as in the load run. Whether a configuration meets the slow-client target is not
    measured here (tests/live/slow_clients.py --worker-class)."""
    runs: dict[str, list[dict]] = {label: [] for label in configs}
    for round_number in range(1, rounds + 1):
        for label in configs:
            worker_class, workers, threads = SERVING_CONFIGS[label]
            with gunicorn(ctx, workers, workdir, worker_class=worker_class, threads=threads):
                ping = wrk_spec("ping", ctx, workdir)
                load.wrk(connections=SERVING_CONNECTIONS, duration=min(2, duration), **ping)
                measured = {}
                for name in endpoints:
                    run = load.wrk(
                        connections=SERVING_CONNECTIONS, duration=duration, **wrk_spec(name, ctx, workdir)
                    )
                    _check_answers(name, SERVING_CONNECTIONS, run)
                    measured[name] = {key: run[key] for key in ("rps", "p50_ms", "p99_ms", "errors")}
            runs[label].append(measured)
            log(
                f"serving {label:<11} round {round_number}: "
                + ", ".join(f"{n} {m['rps']:.0f} req/s p99 {m['p99_ms']:.1f} ms" for n, m in measured.items())
            )
    results = {}
    for label, measured_rounds in runs.items():
        worker_class, workers, threads = SERVING_CONFIGS[label]
        best = {name: max((m[name] for m in measured_rounds), key=lambda m: m["rps"]) for name in endpoints}
        geomean = math.exp(statistics.mean(math.log(max(m["rps"], 0.1)) for m in best.values()))
        results[label] = {
            "worker_class": worker_class,
            "workers": workers,
            "threads": threads,
            "best": best,
            "geomean_rps": round(geomean, 1),
        }
    fastest = max(results, key=lambda label: results[label]["geomean_rps"])
    log(f"serving: fastest {fastest} ({results[fastest]['geomean_rps']} req/s, geometric mean)")
    return {
        "connections": SERVING_CONNECTIONS,
        "duration_s": duration,
        "rounds": rounds,
        "endpoints": list(endpoints),
        "configs": results,
        "runs": runs,
        "fastest": fastest,
    }


def sweep_workers(ctx: dict, profile: Profile, workdir: Path, rounds: int = 2) -> dict:
    """Throughput of ping, list20 and payment at 16 connections for 2, 4 and 5 workers, in
    interleaved rounds (2, 4, 5, 2, 4, 5) so that a burst of outside load hits every setting alike;
    each setting keeps its best round per endpoint. The best geometric mean wins, the fewer workers
    when within 3%."""
    candidates = (2, 4, 5)
    runs: dict[int, list[dict]] = {w: [] for w in candidates}
    for _ in range(rounds):
        for workers in candidates:
            with gunicorn(ctx, workers, workdir):
                load.wrk(connections=16, duration=2, **wrk_spec("ping", ctx, workdir))
                rps = {
                    name: load.wrk(
                        connections=16, duration=profile.sweep_duration, **wrk_spec(name, ctx, workdir)
                    )["rps"]
                    for name in ("ping", "list20", "payment")
                }
            runs[workers].append(rps)
            log(f"workers {workers}: {rps}")
    results = {}
    for workers, rounds_rps in runs.items():
        best = {name: max(r[name] for r in rounds_rps) for name in rounds_rps[0]}
        best["geomean"] = round(math.exp(statistics.mean(math.log(max(v, 0.1)) for v in best.values())), 1)
        results[workers] = best
    top = max(results, key=lambda w: results[w]["geomean"])
    chosen = min(w for w in results if results[w]["geomean"] >= 0.97 * results[top]["geomean"])
    return {"measured": results, "rounds": runs, "chosen": chosen}


def load_run(
    ctx: dict, profile: Profile, scripts: dict, workers: int, workdir: Path, do_profile: bool, only: list[str]
) -> dict:
    endpoints: dict[str, dict] = {}
    hotspots: dict[str, dict] = {}
    with gunicorn(ctx, workers, workdir) as server:
        load.wrk(connections=max(profile.levels), duration=2, **wrk_spec("ping", ctx, workdir))
        ping_spec = wrk_spec("ping", ctx, workdir)
        pair = max(2, profile.duration // 2)
        for name in only:
            spec = wrk_spec(name, ctx, workdir)
            load.wrk(connections=max(profile.levels), duration=profile.warmup, **spec)
            row: dict = {"http": {}, "pgbench": {}}
            for level in profile.levels:
                paired = None
                if name != "ping":  # the ceiling again, right before: outside load drifts
                    paired = load.wrk(connections=level, duration=pair, **ping_spec)["rps"]
                row["http"][level] = load.wrk(connections=level, duration=profile.duration, **spec)
                _check_answers(name, level, row["http"][level])
                row["http"][level]["paired_ping_rps"] = paired
                log(
                    f"wrk     {name:<8} c={level:<3} {_fmt(row['http'][level])} (ceiling just before: {paired})"
                )
            for level in profile.levels:
                script = scripts[name]
                row["pgbench"][level] = load.pgbench(
                    script=script["script"],
                    connections=level,
                    duration=profile.duration,
                    dbname=DB_NAME,
                    defines=script["defines"]
                    | ({"bk_clients": level} if name == "payment" else {})
                    | (
                        {"bk_nonce": f"pgb{time.time_ns()}", "bk_ev": event_nonce()}
                        if "bk_nonce" in script["defines"]
                        else {}
                    ),
                    workdir=workdir,
                )
                log(f"pgbench {name:<8} c={level:<3} {row['pgbench'][level]}")
            endpoints[name] = row
        if do_profile and (ROOT / ".venv" / "bin" / "py-spy").exists():
            level = profile.levels[-1] if len(profile.levels) < 3 else profile.levels[1]
            for name in [n for n in ("list20", "payment") if n in only]:
                spec = wrk_spec(name, ctx, workdir)
                hotspots[name] = load.py_spy(
                    pid=server.master_pid,
                    seconds=profile.profile_seconds,
                    out=workdir / f"py-spy-{name}.txt",
                    load=lambda spec=spec, level=level: load.wrk(
                        connections=level, duration=profile.profile_seconds - 3, **spec
                    ),
                )
                hotspots[name]["connections"] = level
                log(
                    f"py-spy  {name}: {hotspots[name].get('samples')} samples; top self {hotspots[name].get('self', [])[:3]}"
                )
    return {"endpoints": endpoints, "hotspots": hotspots}


def _check_answers(name: str, level: int, run: dict) -> None:
    """A non-2xx answer means the run measured something else than the endpoint (a refused token,
    a request the API rejects): the figures would be meaningless, so the run stops."""
    refused = run["error_detail"].get("status", 0)
    if refused:
        raise RuntimeError(
            f"wrk {name} c={level}: {refused} of {run['requests']} answers were not 2xx; "
            f"see the gunicorn log in {WORK}"
        )


def _fmt(r: dict) -> str:
    err = f" errors {r['errors']} {r['error_detail']}" if r["errors"] else ""
    return f"{r['rps']:>8.1f} req/s  p50 {r['p50_ms']:>7.2f} ms  p99 {r['p99_ms']:>7.2f} ms{err}"


# --- scale checks -------------------------------------------------------------------------------


def reset_statuses() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "UPDATE invoices_invoice i SET status = s.status FROM bench_seed_status s "
            "WHERE i.id = s.id AND i.status <> s.status"
        )
        cur.execute("VACUUM (ANALYZE) invoices_invoice")


def scale_checks(ctx: dict, profile: Profile, label: str) -> dict:
    """For tenant 1: the summary and the first list page (server time, in-process), their plans,
    and mark_overdue over the whole table (reset to the seeded statuses between runs)."""
    from bench.inproc import Req, api_client, capture, explain, plan_summary, server_time, time_mark_overdue

    client = api_client(ctx["tokens"]["bench_t01"])
    summary_req, list_req = Req("GET", "/api/invoices/summary/"), Req("GET", "/api/invoices/")
    out: dict = {
        "label": label,
        "tenant_invoices": ctx["plan"].invoices,
        "table_invoices": ctx["plan"].total_invoices,
        "summary": server_time(client, summary_req, repeat=profile.scale_repeats),
        "list_first_page": server_time(client, list_req, repeat=profile.scale_repeats),
        "explain": {},
    }
    for name, req in (("summary", summary_req), ("list_first_page", list_req)):
        for i, (_, sql) in enumerate(e for e in capture(client, req, 200)[0] if e[0] == "sql"):
            if "invoices_invoice" not in sql:
                continue
            plan = explain(sql)
            kind = "aggregate" if name == "summary" else ("count" if "COUNT(*)" in sql else "page")
            key = f"{name} {kind} (query {i + 1})"
            out["explain"][key] = {"sql": sql, "plan": plan, **plan_summary(plan)}
    runs = []
    for _ in range(profile.overdue_repeats):
        reset_statuses()
        seconds, moved, statements = time_mark_overdue()
        runs.append({"seconds": round(seconds, 3), "moved": moved, "statements": statements})
    reset_statuses()
    out["mark_overdue"] = {
        "median_s": round(statistics.median(r["seconds"] for r in runs), 3),
        "moved": runs[0]["moved"],
        "statements": runs[0]["statements"],
        "runs": runs,
    }
    log(
        f"scale {label}: summary {out['summary']['median_ms']} ms, first page {out['list_first_page']['median_ms']} ms, "
        f"mark_overdue {out['mark_overdue']['median_s']} s for {out['mark_overdue']['moved']:,} rows"
    )
    return out


# --- main ---------------------------------------------------------------------------------------


def context_for(plan: Plan, port: int, *, worker_class: str = load.WORKER_CLASS, threads=None) -> dict:
    """What the measurements need: tenant 1's organization (every request is its own) and first
    customer, a token of every bench member, the API keys, the invoice pools, the gunicorn worker
    class."""
    from customers.models import Customer
    from users.models import Organization

    organization = Organization.objects.get(name="bench_t01")
    return {
        "plan": plan,
        "port": port,
        "worker_class": worker_class,
        "threads": threads,
        "organization": organization.pk,
        "tokens": tokens(),
        "api_keys": api_keys(),
        "pools": pools(),
        "customer": Customer.objects.filter(organization=organization)
        .order_by("id")
        .values_list("id", flat=True)
        .first(),
    }


def with_stored_pdfs(ctx: dict) -> dict:
    """The stored PDFs of `pdf` and `hosted` written (bench/capture.py `stored_documents`), their
    invoices and hosted-page tokens in `ctx`; what was stored, for the results."""
    stored = stored_documents(ctx["organization"])
    ctx["pools"]["pdf"], ctx["hosted_tokens"] = stored["invoices"], stored["tokens"]
    return {"invoices": len(stored["invoices"]), "bytes": stored["bytes"], "render_s": stored["render_s"]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument(
        "--reseed", action="store_true", help="drop and seed billing_bench even if the data is there"
    )
    parser.add_argument(
        "--workers", type=int, help="gunicorn workers (default: measured in full, 2 x cores in quick)"
    )
    parser.add_argument(
        "--sweep-workers", action="store_true", help="measure 2, 4 and 5 workers and take the best"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--port", type=int, help="gunicorn's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--no-readme", action="store_true", help="write the JSON only, leave bench/README.md")
    parser.add_argument(
        "--label",
        help="name the summary bench/results/<date>-<label>-<profile>.md (default <date>-<profile>.md)",
    )
    parser.add_argument("--duration", type=int, help="seconds per endpoint and level (overrides the profile)")
    parser.add_argument(
        "--levels", help="comma-separated connection counts (overrides the profile), e.g. 4,16"
    )
    parser.add_argument("--seed-only", action="store_true", help="seed the profile's data set, report, stop")
    parser.add_argument(
        "--endpoints",
        help=f"comma-separated subset of {','.join(ENDPOINTS)} for the load run (ping is always run); "
        f"with --serving, of {','.join(SERVING_ENDPOINTS)} (the default)",
    )
    parser.add_argument(
        "--worker-class",
        choices=load.WORKER_CLASSES,
        default=load.WORKER_CLASS,
        help="gunicorn's worker class (default sync, as every earlier run; gevent: gunicorn.conf.py as shipped)",
    )
    parser.add_argument("--threads", type=int, default=4, help="threads a gthread worker (4)")
    parser.add_argument(
        "--serving",
        nargs="?",
        const=",".join(SERVING_CONFIGS),
        metavar="CONFIGS",
        help="instead of the load run: compare gunicorn configurations (default all of "
        f"{','.join(SERVING_CONFIGS)}) at {SERVING_CONNECTIONS} connections, 2 interleaved rounds; "
        "the summary is <date>-serving-<profile>.md, bench/README.md is left alone",
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    if args.duration:
        profile = replace(
            profile, duration=args.duration, sweep_duration=min(profile.sweep_duration, args.duration)
        )
    if args.levels:
        profile = replace(profile, levels=tuple(int(c) for c in args.levels.split(",")))
    only = list(SERVING_ENDPOINTS if args.serving else ENDPOINTS)
    if args.endpoints:
        wanted = set(args.endpoints.split(",")) | {"ping"}
        if wanted - set(ENDPOINTS):
            parser.error(f"unknown endpoints: {', '.join(sorted(wanted - set(ENDPOINTS)))}")
        only = [n for n in ENDPOINTS if n in wanted]
    serving_configs = args.serving.split(",") if args.serving else []
    if set(serving_configs) - set(SERVING_CONFIGS):
        parser.error(
            f"unknown configurations: {', '.join(sorted(set(serving_configs) - set(SERVING_CONFIGS)))}"
        )
    threads = args.threads if args.worker_class == "gthread" else None
    check_tools(need_py_spy=not args.no_profile)
    os.environ.update(bench_env())
    import logging
    import warnings

    import django

    django.setup()
    # In-process requests would print their access-log line to this terminal; gunicorn keeps it.
    logging.getLogger("billing.request").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="No directory at")
    RESULTS.mkdir(parents=True, exist_ok=True)
    RAW_RESULTS.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.seed_only:
        info = ensure_dataset(profile.plan, reseed=args.reseed)
        print(json.dumps(info, indent=2))
        return 0
    for old in WORK.iterdir():  # the previous run's scripts, pools and logs
        shutil.rmtree(old, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{profile.name}-", dir=WORK))
    started = time.monotonic()
    result: dict = {
        "profile": profile.name,
        "label": "-".join(part for part in (args.label, "serving" if args.serving else None) if part) or None,
        "date": dt.date.today().isoformat(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {
            "levels": list(profile.levels),
            "duration_s": profile.duration,
            "warmup_s": profile.warmup,
            "plan": asdict(profile.plan),
            "compare": asdict(profile.compare) if profile.compare else None,
            "gunicorn": f"gunicorn.conf.py with {' '.join(load.serving_options(args.worker_class, threads))}, "
            f"{HOST}:{port}, "
            "DB_CONN_MAX_AGE default (persistent), CONN_HEALTH_CHECKS on",
            "pgbench": "-M simple, one connection per client, same client count as wrk connections",
        },
        "datasets": {},
        "machine": machine(None),
    }
    if args.serving:
        result["config"] |= {"levels": [SERVING_CONNECTIONS], "duration_s": profile.sweep_duration}
    # Full: measure the dataset already in the database first, so a rerun reseeds only one of the two.
    plans = [("load", profile.plan)]
    if profile.compare and not args.serving:
        plans.append(("compare", profile.compare))
        if _db_exists() and not args.reseed:
            with _pg(DB_NAME, autocommit=False) as conn:
                if _same_plan(seeded_plan(conn), profile.compare):
                    plans.reverse()
    try:
        for role, plan in plans:
            info = ensure_dataset(plan, reseed=args.reseed)
            result["datasets"][role] = info
            ctx = context_for(plan, port, worker_class=args.worker_class, threads=threads)
            if role == "load" and args.serving:
                result["stored_pdfs"] = with_stored_pdfs(ctx)
                _restore_now()
                result["serving"] = serving_comparison(
                    ctx, serving_configs, only, profile.sweep_duration, workdir
                )
                _restore_now()
            elif role == "load":
                result["stored_pdfs"] = with_stored_pdfs(ctx)
                if profile.name == "quick" or not info["reused"]:
                    result["verify_ledger_after_seed"] = verify_ledger(organization_id=1)
                result["query_counts"] = query_counts(ctx)
                scripts = pgbench_scripts(ctx, workdir)
                result["sql"] = {n: s["sql"] for n, s in scripts.items()}
                result["round_trips"] = {n: s["round_trips"] for n, s in scripts.items()}
                _restore_now()
                workers = args.workers
                if workers is None and (profile.sweep_workers or args.sweep_workers):
                    result["worker_sweep"] = sweep_workers(ctx, profile, workdir)
                    workers = result["worker_sweep"]["chosen"]
                    _restore_now()
                workers = workers or DEFAULT_WORKERS_PER_CORE * (os.cpu_count() or 1)
                result["machine"]["gunicorn_workers"] = workers
                result["machine"]["gunicorn_worker_class"] = args.worker_class
                result["machine"]["gunicorn_threads"] = threads
                result.update(load_run(ctx, profile, scripts, workers, workdir, not args.no_profile, only))
                _restore_now()
                if {"create", "payment"} <= set(only):
                    levels = tuple(c for c in profile.levels if c > 1)
                    duration = 3 if profile.name == "quick" else 8
                    result["trigger_cost"] = trigger_cost(scripts, workdir, levels=levels, duration=duration)
                    _restore_now()
                result["scale"] = result.get("scale", {}) | {"load": scale_checks(ctx, profile, _label(plan))}
                if profile.name == "quick":
                    result["verify_ledger_after_run"] = verify_ledger(organization_id=1)
            else:
                result["scale"] = result.get("scale", {}) | {
                    "compare": scale_checks(ctx, profile, _label(plan))
                }
    finally:
        from django.db import connections

        connections.close_all()
        if _db_exists():
            with _pg(DB_NAME, autocommit=False) as conn:
                if seeded_plan(conn):
                    restore(conn)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["duration_s"] = round(time.monotonic() - started, 1)
    report.finish(result, ROOT, write_readme=not (args.no_readme or args.serving))
    log(f"done in {result['duration_s']} s")
    return 0


def _label(plan: Plan) -> str:
    return f"{plan.tenants} x {plan.invoices:,} invoices"


def _restore_now() -> None:
    from django.db import connections

    connections.close_all()
    with _pg(DB_NAME, autocommit=False) as conn:
        restore(conn)
        conn.autocommit = True
        conn.cursor().execute("VACUUM (ANALYZE)")


if __name__ == "__main__":
    sys.exit(main())
