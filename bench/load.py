"""The load side: gunicorn on 127.0.0.1, wrk with bench/lua/bench.lua, pgbench on captured SQL, py-spy.

gunicorn is started by tests/live/server.py (LiveServer), as the live test scripts start it.
Every external run is bounded in time (its own -d/-T, plus a subprocess timeout as a backstop).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from tests.live.server import LiveServer

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "lua" / "bench.lua"
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
# gunicorn reads ./gunicorn.conf.py (its hooks: the body deadline); these options override the rest.
# The worker class is sync unless a run asks for another (bench/run.py --worker-class): sync replaces
# the file's gevent workers (and so its request slots), as in every run in bench/results/ so far.
WORKER_CLASSES = ("sync", "gthread", "gevent")
WORKER_CLASS = "sync"
BASE_OPTIONS = ("--backlog=2048", "--timeout=60", "--graceful-timeout=5", "--log-level=warning")


def serving_options(worker_class: str = WORKER_CLASS, threads: int | None = None) -> tuple[str, ...]:
    """gunicorn's options for `worker_class`: gevent is the file's own (gunicorn.conf.py as shipped:
    gevent workers, request slots, cooperative psycopg2), so nothing overrides it; sync and gthread
    are set here (gthread with `threads` threads a worker)."""
    if worker_class not in WORKER_CLASSES:
        raise ValueError(f"worker class {worker_class!r}: one of {', '.join(WORKER_CLASSES)}")
    if worker_class == "gevent":
        return BASE_OPTIONS
    threaded = [f"--threads={threads}"] if worker_class == "gthread" and threads else []
    return (f"--worker-class={worker_class}", *threaded, *BASE_OPTIONS)


GUNICORN_OPTIONS = serving_options()


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def gunicorn(
    *,
    workers: int,
    port: int,
    env: dict,
    log: Path,
    worker_class: str = WORKER_CLASS,
    threads: int | None = None,
) -> LiveServer:
    """gunicorn for a load run, on `billing_bench` as it is (bench/dataset.py seeds it: no database
    set-up, no migrations here), with `workers` workers of `worker_class` (`serving_options`);
    `with` starts it, waits for /api/health/ and stops it."""
    return LiveServer(
        env=env,
        port=port,
        workers=workers,
        options=serving_options(worker_class, threads),
        log_path=log,
        database=None,
        migrate=False,
        boot_timeout=30,
        stop_timeout=15,
    )


def wrk(
    *,
    base_url: str,
    connections: int,
    duration: float,
    mode: str,
    path: str,
    token: str,
    pool: Path | None = None,
    body: str = "",
) -> dict:
    """One closed-loop wrk run against `base_url` at a fixed number of connections; requests/s and
    latency percentiles. Mode `pick`: `path` has one `%s`, each request's taken at random from `pool`."""
    threads = min(2, connections)
    env = os.environ | {
        "BENCH_TOKEN": token,
        "BENCH_MODE": mode,
        "BENCH_PATH": path,
        "BENCH_POOL": str(pool or ""),
        "BENCH_BODY": body,
        "BENCH_THREADS": str(threads),
        "BENCH_NONCE": f"wrk{time.time_ns()}",
    }
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"{base_url}{path.partition('%s')[0]}",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    data = json.loads(match.group(1))
    seconds = data["duration_us"] / 1e6
    errors = sum(data["errors"].values())
    lat = data["latency_us"]
    return {
        "rps": round(data["requests"] / seconds, 1),
        "requests": data["requests"],
        "p50_ms": round(lat["p50"] / 1000, 2),
        "p90_ms": round(lat["p90"] / 1000, 2),
        "p99_ms": round(lat["p99"] / 1000, 2),
        "mean_ms": round(lat["mean"] / 1000, 2),
        "errors": errors,
        "error_detail": {k: v for k, v in data["errors"].items() if v},
    }


def pgbench(
    *,
    script: Path,
    connections: int,
    dbname: str,
    defines: dict,
    workdir: Path,
    duration: int | None = None,
    transactions: int | None = None,
) -> dict:
    """pgbench on one script, simple protocol (as psycopg2 sends it), one connection per client kept
    for the run (as Django's persistent connections are); tps and per-transaction latency percentiles."""
    prefix = workdir / f"pgbench_{script.stem}_{connections}"
    for old in glob.glob(f"{prefix}*"):
        os.unlink(old)
    cmd = [
        "pgbench",
        "-h",
        PG["host"],
        "-p",
        PG["port"],
        "-U",
        PG["user"],
        "-n",
        "-M",
        "simple",
        "-c",
        str(connections),
        "-j",
        str(min(connections, 2)),
        *(["-T", str(duration)] if duration else ["-t", str(transactions)]),
        "-f",
        str(script),
        "-l",
        "--log-prefix",
        str(prefix),
    ]
    for key, value in defines.items():
        cmd += ["-D", f"{key}={value}"]
    cmd.append(dbname)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=(duration or 60) + 60, check=False)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    if out.returncode != 0 or not tps:
        raise RuntimeError(
            f"pgbench {script.name} failed ({out.returncode}): {out.stdout[-600:]} {out.stderr[-1500:]}"
        )
    latencies = []
    for name in glob.glob(f"{prefix}*"):
        with open(name) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    latencies.append(int(parts[2]))
        os.unlink(name)
    latencies.sort()
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    return {
        "tps": round(float(tps.group(1)), 1),
        "transactions": len(latencies),
        "p50_ms": round(percentile(latencies, 50) / 1000, 3),
        "p99_ms": round(percentile(latencies, 99) / 1000, 3),
        "failed": int(failed.group(1)) if failed else 0,
    }


# --- profiling --------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")
# Where a sample's time goes, decided by the deepest frame that matches a rule (wall time: py-spy
# runs with --idle, so time a worker waits on PostgreSQL counts; time it waits for a connection
# to accept, outside any request, is left out).
CATEGORIES = (
    ("PostgreSQL: CONN_HEALTH_CHECKS SELECT 1", lambda func, file: "is_usable" in func),
    ("PostgreSQL: COMMIT", lambda func, file: func.endswith("._commit")),
    ("PostgreSQL: statements", lambda func, file: func == "CursorWrapper._execute" or "psycopg2" in file),
    ("ORM: SQL compilation", lambda func, file: file.startswith("django/db/models/sql/")),
    (
        "ORM: rows to model instances",
        lambda func, file: file in ("django/db/models/query.py", "django/db/models/base.py"),
    ),
    ("authentication (knox token)", lambda func, file: file.startswith(("users/auth.py", "knox/"))),
    (
        "serializers",
        lambda func, file: (
            file.startswith("rest_framework/")
            and file.endswith(("serializers.py", "fields.py", "relations.py"))
        )
        or file.endswith("/serializers.py"),
    ),
    ("JSON rendering", lambda func, file: file.startswith(("rest_framework/renderers.py", "json/"))),
    (
        "filters and pagination",
        lambda func, file: file.startswith("django_filters/") or file.endswith("pagination.py"),
    ),
    ("logging", lambda func, file: file.startswith("logging/")),
    ("gunicorn: HTTP parse and write", lambda func, file: file.startswith("gunicorn/")),
)
OTHER = "other request handling (Django, DRF, middleware)"


def py_spy(*, pid: int, seconds: int, out: Path, load) -> dict:
    """Sample every gunicorn worker (py-spy --subprocesses --idle) while `load()` runs; rank."""
    cmd = [
        str(ROOT / ".venv" / "bin" / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--idle",
        "--duration",
        str(seconds),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    load_result: dict = {}
    worker = threading.Thread(target=lambda: load_result.update(load()))
    worker.start()
    worker.join(timeout=seconds + 60)
    try:
        proc.wait(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)
    if not out.exists():
        return {"error": (proc.stdout.read() if proc.stdout else "")[-500:]}
    return {"load": load_result, **rank_stacks(out.read_text())}


def _short(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    file = m.group("file")
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/", "lib/python3.12/", "lib/python3.13/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return m.group("func"), file


def rank_stacks(raw: str, top: int = 15) -> dict:
    """Wall-time shares of the samples taken inside a request: by category, by function (self),
    and by function including callees (leaving out the wrappers every request runs through)."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if f[1]]
        if not frames:
            continue
        if not any(file.startswith("django/") for _, file in frames):
            idle += count  # a worker between requests (accept/select)
            continue
        total += count
        leaf = frames[-1]
        self_counts[f"{leaf[0]} ({leaf[1]})"] += count
        for key in {f"{func} ({file})" for func, file in frames}:
            incl_counts[key] += count
        categories[_category(frames)] += count

    def share(counter: Counter[str], limit: float = 1.0) -> list[dict]:
        rows = [{"function": k, "share": round(v / max(1, total), 3)} for k, v in counter.most_common()]
        return [r for r in rows if r["share"] < limit][:top]

    return {
        "samples": total,
        "samples_between_requests": idle,
        "breakdown": [
            {"category": k, "share": round(v / max(1, total), 3)} for k, v in categories.most_common()
        ],
        "self": share(self_counts),
        "inclusive": share(incl_counts, limit=0.75),
    }


def _category(frames: list[tuple[str, str]]) -> str:
    for func, file in reversed(frames):
        for name, rule in CATEGORIES:
            if rule(func, file):
                return name
    return OTHER
