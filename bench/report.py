"""Results: bench/results/raw/<date>.json (one key per profile; git-ignored), the Markdown summary
bench/results/<date>-<profile>.md and the same block in bench/README.md (both kept in git)."""

from __future__ import annotations

import json
import re
from pathlib import Path

# Of the ceiling's requests/s, in the same run (issue 17).
TARGET_RATIO_PING = {
    "me": 0.85,
    "customers": 0.55,
    "payment": 0.5,
    "list20": 0.5,
    "list100": 0.25,
    "detail": 0.6,
    "summary": 0.7,
    "pdf": 0.5,
}
LABELS = {
    "ping": "bare authenticated DRF view (ceiling)",
    "ping_key": "bare authenticated DRF view, API key",
    "me": "GET /api/me/ (the caller and its organization)",
    "customers": "list customers (default page)",
    "list20": "list invoices, page_size=20",
    "list100": "list invoices, page_size=100",
    "detail": "invoice detail",
    "summary": "summary",
    "create": "create invoice (3 lines)",
    "payment": "submit payment",
    "pdf": "stored PDF download (file response)",
    "hosted": "hosted invoice page (HTML, no credential)",
}
QUERY_KEY = {"list20": "list", "list100": "list"}


def _ok(value) -> str:
    return "n/a" if value is None else ("✅" if value else "❌")


def add_derived(result: dict) -> None:
    """Ratios to the ceiling and to pgbench, and the list of targets with pass/fail."""
    endpoints = result.get("endpoints", {})
    ping = endpoints.get("ping", {}).get("http", {})
    for name, row in endpoints.items():
        queries = _queries_for(name, result.get("query_counts", {}))
        row["queries"] = int(queries) if queries.isdigit() else None
        row["round_trips"] = result.get("round_trips", {}).get(name)
        for level, http in row["http"].items():
            pg = row["pgbench"].get(level)
            # against the ceiling measured right before this run (same outside load), else the ping row
            ceiling = http.get("paired_ping_rps") or (ping[level]["rps"] if level in ping else None)
            http["ratio_to_ping"] = round(http["rps"] / ceiling, 3) if ceiling else None
            http["ratio_to_pgbench"] = round(http["rps"] / pg["tps"], 3) if pg and pg["tps"] else None
    targets = []
    for name, row in result.get("query_counts", {}).items():
        if row["target"] is None:
            continue
        sign = "=" if row["exact"] else "≤"
        measured = _measured(row["max"], row["variants"], row["independent"])
        if "api_key_variants" in row:
            key = _measured(row["api_key_max"], row["api_key_variants"], row["api_key_independent"])
            measured = f"token {measured}; API key {key}"
        targets.append(
            {
                "target": f"{name}: queries/request {sign} {row['target']}"
                + ("" if row["independent"] is None else ", independent of size")
                + (", with a token and with an API key" if "api_key_variants" in row else ""),
                "measured": measured,
                "pass": row["pass"],
            }
        )
    for name, minimum in TARGET_RATIO_PING.items():
        if name not in endpoints:
            continue
        ratios = {lvl: h["ratio_to_ping"] for lvl, h in endpoints[name]["http"].items()}
        worst = min(ratios.values())
        targets.append(
            {
                "target": f"{name}: throughput ≥ {minimum:.0%} of the bare DRF view's",
                "measured": ", ".join(f"c={lvl}: {r:.0%}" for lvl, r in ratios.items()),
                "pass": worst >= minimum,
            }
        )
    scale = result.get("scale", {})
    big, small = scale.get("load"), scale.get("compare")
    full = result.get("profile") == "full"
    if big:
        rows = [
            ("summary", "summary", 150.0, "ms"),
            ("list_first_page", "first list page", 30.0, "ms"),
        ]
        for key, label, limit, _ in rows:
            value = big[key]["median_ms"]
            targets.append(
                {
                    "target": f"{label} for a {big['tenant_invoices']:,}-invoice tenant, table of "
                    f"{big['table_invoices']:,}: < {limit:g} ms (server time)",
                    "measured": f"{value} ms (SQL {big[key]['sql_median_ms']} ms)",
                    "pass": value < limit if full else None,
                }
            )
            if small:
                growth = value / small[key]["median_ms"]
                big[key]["growth_vs_compare"] = round(growth, 2)
                targets.append(
                    {
                        "target": f"{label}: ≤ 2x its time with {small['table_invoices']:,} invoices in the table",
                        "measured": f"{growth:.2f}x ({small[key]['median_ms']} → {value} ms)",
                        "pass": growth <= 2.0,
                    }
                )
        mo = big["mark_overdue"]
        overdue = result.get("query_counts", {}).get("mark_overdue", {})
        statements = overdue.get("target")
        zones = overdue.get("time_zones")
        targets.append(
            {
                "target": f"mark_overdue over {big['table_invoices']:,} invoices: < 10 s, "
                f"{statements} statements (the zones read, then one per time zone: {zones})",
                "measured": f"{mo['median_s']} s for {mo['moved']:,} rows moved, {mo['statements']} statement(s)",
                "pass": (mo["median_s"] < 10 and mo["statements"] == statements) if full else None,
            }
        )
    result["targets"] = targets


def _measured(worst: int, variants: dict, independent: bool | None) -> str:
    extra = "" if independent is None else (", same for every size" if independent else ", GROWS")
    return f"{worst} (variants {sorted(set(variants.values()))}{extra})"


def finish(result: dict, root: Path, *, write_readme: bool = True) -> None:
    """Write the run's JSON and Markdown; `result["label"]`, when set, names them
    (`<date>-<label>-<profile>.md`, JSON key `<label>-<profile>`), so that a second run on one day
    keeps the first's summary."""
    add_derived(result)
    out = root / "bench" / "results" / "raw" / f"{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    name = "-".join(part for part in (result.get("label"), result["profile"]) if part)
    data[name] = result
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"results: {out.relative_to(root)}")
    md = markdown(result)
    (root / "bench" / "results" / f"{result['date']}-{name}.md").write_text(md)
    if write_readme:
        readme = root / "bench" / "README.md"
        text = readme.read_text() if readme.exists() else "# Benchmarks\n"
        start, end = (
            f"<!-- results:{result['profile']}:start -->",
            f"<!-- results:{result['profile']}:end -->",
        )
        block = f"{start}\n{md}\n{end}"
        if start in text:
            text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        readme.write_text(text)
        print(f"table: {readme.relative_to(root)}")
    print(md)


def _machine(m: dict) -> str:
    pg = m.get("postgresql_settings", {})
    return (
        f"{m['nproc']} x {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}; {m['postgresql']} "
        f"(shared_buffers {_pages(pg.get('shared_buffers'))}, synchronous_commit {pg.get('synchronous_commit')}, "
        f"jit {pg.get('jit')}); Python {m['python']}, Django {m['django']}, DRF {m['djangorestframework']}, "
        f"gunicorn {m['gunicorn']} ({_workers(m)}, gunicorn.conf.py); {m['wrk']}; {m['pgbench']}. "
        f"Load average {_load(m.get('load_average_at_start'))} at start, "
        f"{_load(m.get('load_average_at_end'))} at the end."
    )


def _workers(m: dict) -> str:
    threads = f"of {m['gunicorn_threads']} threads" if m.get("gunicorn_threads") else None
    return " ".join(
        str(v) for v in (m.get("gunicorn_workers"), m.get("gunicorn_worker_class"), "workers", threads) if v
    )


def _pages(value: str | None) -> str:
    if value and value.endswith("8kB"):
        return f"{int(value[:-3]) * 8 // 1024} MB"
    return str(value)


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "?"


def markdown(r: dict) -> str:
    out = []
    plan = r["config"]["plan"]
    out.append(
        f"### `{r['profile']}`{f' ({label})' if (label := r.get('label')) else ''} — {r['date']}: {plan['tenants']} tenants x {plan['invoices']:,} invoices "
        f"(+ one tenant of {plan['tiny_invoices']}); connections {', '.join(map(str, r['config']['levels']))}, "
        f"{r['config']['duration_s']} s per run"
    )
    out.append("")
    out.append(f"Machine: {_machine(r['machine'])} Run took {r.get('duration_s')} s.")
    for role, info in r.get("datasets", {}).items():
        rows = info.get("rows")
        seeded = (
            f"seeded {rows['invoices']:,} invoices, {rows['lines']:,} lines, {rows['payments']:,} payments in "
            f"{info['total_s']} s (COPY {info['copy_s']} s, VACUUM ANALYZE {info['vacuum_analyze_s']} s)"
            if rows
            else f"reused (seeded {info.get('seeded_at')})"
        )
        out.append(f"Data ({role}): {seeded}; database {info['database_mb']} MB.")
    if sweep := r.get("worker_sweep"):
        parts = "; ".join(
            f"{w}: " + ", ".join(f"{k} {v}" for k, v in rps.items()) for w, rps in sweep["measured"].items()
        )
        out.append(
            f"Workers measured (req/s at 16 connections, best of the interleaved rounds): {parts} → **{sweep['chosen']}**."
        )
    out.append("")
    qc = r.get("query_counts", {})
    if serving := r.get("serving"):
        out.extend(_serving(serving))
    if r.get("endpoints"):
        out.append(
            "| endpoint | queries (round trips) | conns | req/s | p50 ms | p99 ms | pgbench tps (same SQL) "
            "| pgbench p50/p99 ms | % of pgbench | % of ceiling (ceiling req/s) |"
        )
        out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for name, row in r["endpoints"].items():
            rt = r.get("round_trips", {}).get(name, "?")
            q = _queries_for(name, qc)
            for level, http in row["http"].items():
                pg = row["pgbench"].get(level, {})
                err = f" ({http['errors']} errors)" if http.get("errors") else ""
                out.append(
                    f"| {LABELS.get(name, name)} | {q} ({rt}) | {level} | {http['rps']:.0f}{err} | {http['p50_ms']:.1f} "
                    f"| {http['p99_ms']:.1f} | {pg.get('tps', 0):.0f} | {pg.get('p50_ms', 0):.2f} / {pg.get('p99_ms', 0):.2f} "
                    f"| {_pct(http.get('ratio_to_pgbench'))} | {_pct(http.get('ratio_to_ping'))}{_ceiling(http)} |"
                )
        out.append("")
        if "hosted" in r["endpoints"]:
            out.append(
                "The hosted page is found by its token alone and throttled per client address; wrk sends "
                "from one, so the bench settings (`bench/settings.py`) raise `HOSTED_PAGE_THROTTLE_RATE` "
                "beyond what a run sends: every request is still counted (its one `INSERT … ON CONFLICT` "
                "on the counter row of 127.0.0.1, shared by every connection), none is refused."
            )
            out.append("")
        if stored := r.get("stored_pdfs"):
            out.append(
                f"`pdf` and `hosted` pick one of {stored['invoices']} issued invoices of tenant 1 whose "
                f"version 1 is stored (`bench/capture.py` `stored_documents`: one real PDF of "
                f"{stored['bytes']:,} bytes, rendered once, a file of each invoice's own under the bench's "
                "MEDIA_ROOT)."
            )
            out.append("")
        out.append(
            "Round trips count what the request sends to PostgreSQL: its queries, BEGIN/COMMIT of its "
            "transaction and the `SELECT 1` health check Django runs at the start of each request "
            "(CONN_HEALTH_CHECKS). The pgbench script of an endpoint runs exactly those statements "
            "(see `sql` in the JSON). % of ceiling divides by the ceiling's req/s measured right before "
            "that run at the same connections (in brackets), so outside load drifting during the run "
            "skews the ratio less."
        )
        out.append("")
    if tc := r.get("trigger_cost"):
        out.append(
            "What keeping InvoiceTotals costs the writers: pgbench on the endpoint's own SQL (one organization), "
            "the invoice table's triggers on and off in turn, median of interleaved rounds (`bench/triggers.py`)."
        )
        out.append("")
        out.append("| endpoint | clients | tps, triggers on | tps, off | cost | p99 ms on / off |")
        out.append("|---|--:|--:|--:|--:|--:|")
        for name, levels in tc.items():
            for level, row in levels.items():
                out.append(
                    f"| {LABELS.get(name, name)} | {level} | {row['on']:.0f} | {row['off']:.0f} | {_pct(row['cost'])} "
                    f"| {row['p99_on_ms']:.1f} / {row['p99_off_ms']:.1f} |"
                )
        out.append("")
    if qc:
        out.append(
            "| queries per request | variants, with a member's token | with an API key | target | met |"
        )
        out.append("|---|---|---|---|---|")
        for name, row in qc.items():
            variants = "; ".join(f"{k}: {v}" for k, v in row["variants"].items())
            target = "—" if row["target"] is None else f"{'=' if row['exact'] else '≤'} {row['target']}"
            out.append(f"| {name} | {variants} | {_key_variants(row)} | {target} | {_ok(row['pass'])} |")
        out.append("")
    scale = r.get("scale", {})
    if scale:
        out.append(
            "| scale check (tenant 1, server time in-process) | "
            + " | ".join(s["label"] for s in scale.values())
            + " |"
        )
        out.append("|---|" + "--:|" * len(scale))
        for key, label in (("summary", "summary"), ("list_first_page", "first list page")):
            cells = [f"{s[key]['median_ms']} ms (SQL {s[key]['sql_median_ms']})" for s in scale.values()]
            out.append(f"| {label}, median | " + " | ".join(cells) + " |")
        cells = [
            f"{s['mark_overdue']['median_s']} s, {s['mark_overdue']['moved']:,} rows" for s in scale.values()
        ]
        out.append("| mark_overdue, whole table | " + " | ".join(cells) + " |")
        out.append("")
        out.append("| EXPLAIN (ANALYZE, BUFFERS) | " + " | ".join(s["label"] for s in scale.values()) + " |")
        out.append("|---|" + "---|" * len(scale))
        keys = list(next(iter(scale.values()))["explain"])
        for key in keys:
            cells = []
            for s in scale.values():
                e = s["explain"].get(key)
                if not e:
                    cells.append("—")
                    continue
                how = ", ".join(e["indexes"]) or "no index"
                seq = f"; Seq Scan {', '.join(e['seq_scans'])}" if e["seq_scans"] else ""
                cells.append(
                    f"{e['execution_ms']} ms; {how}{seq}; buffers hit {e['shared_hit']:,} read {e['shared_read']:,}"
                    + (f"; heap fetches {e['heap_fetches']:,}" if e["heap_fetches"] else "")
                )
            out.append(f"| {key} | " + " | ".join(cells) + " |")
        out.append("")
    if r.get("hotspots"):
        for name, prof in r["hotspots"].items():
            if "self" not in prof:
                continue
            conns = prof.get("connections")
            out.append(
                f"py-spy, {LABELS.get(name, name)} at {conns} connections ({prof['samples']:,} samples in requests, "
                "all workers, wall time): "
                + ", ".join(f"{b['category']} {b['share']:.0%}" for b in prof.get("breakdown", []))
                + ". Self — "
                + ", ".join(f"`{h['function']}` {h['share']:.0%}" for h in prof["self"][:8])
                + "; inclusive — "
                + ", ".join(f"`{h['function']}` {h['share']:.0%}" for h in prof["inclusive"][:12])
                + "."
            )
            out.append("")
    if r.get("targets"):
        out.append("| target | measured | met |")
        out.append("|---|---|---|")
        for t in r["targets"]:
            out.append(f"| {t['target']} | {t['measured']} | {_ok(t['pass'])} |")
        out.append("")
    return "\n".join(out)


def _serving(serving: dict) -> list[str]:
    """The gunicorn configurations side by side (bench/run.py --serving)."""
    endpoints = serving["endpoints"]
    out = [
        f"Serving (`bench/run.py --serving`): wrk at {serving['connections']} connections, "
        f"{serving['duration_s']} s a run, each configuration's best of {serving['rounds']} interleaved "
        "rounds; req/s, p99 ms in brackets. gevent is gunicorn.conf.py as shipped (request slots); sync "
        "and gthread override its worker class. The slow-client target is checked apart "
        "(`tests/live/slow_clients.py --worker-class ...`).",
        "",
        "| configuration | " + " | ".join(endpoints) + " | geometric mean, req/s |",
        "|---|" + "--:|" * (len(endpoints) + 1),
    ]
    for label, config in serving["configs"].items():
        threads = f", {config['threads']} threads each" if config["threads"] else ""
        cells = [f"{config['best'][e]['rps']:.0f} ({config['best'][e]['p99_ms']:.1f})" for e in endpoints]
        fastest = " (fastest)" if label == serving["fastest"] else ""
        out.append(
            f"| {config['workers']} {config['worker_class']} workers{threads} | "
            + " | ".join(cells)
            + f" | {config['geomean_rps']:.0f}{fastest} |"
        )
    out.append("")
    return out


def _key_variants(row: dict) -> str:
    """The API key's counts: "same" where they are the token's, else each one that differs."""
    if "api_key_variants" not in row:
        return "—"
    differing = [f"{k}: {v}" for k, v in row["api_key_variants"].items() if row["variants"].get(k) != v]
    return "; ".join(["same" if len(differing) < len(row["api_key_variants"]) else "", *differing]).strip(
        "; "
    )


def _queries_for(name: str, qc: dict) -> str:
    if name.endswith("_key"):
        row = qc.get(QUERY_KEY.get(name[:-4], name[:-4]))
        return str(row["api_key_variants"]["authenticated DRF view"]) if row else "?"
    row = qc.get(QUERY_KEY.get(name, name))
    if not row:
        return "?"
    if name in ("list20", "list100"):
        size = name[4:]
        values = [v for k, v in row["variants"].items() if k.startswith(f"page_size={size},")]
        return str(max(values)) if values else str(row["max"])
    if name in ("create", "payment"):
        values = [v for k, v in row["variants"].items() if "Idempotency-Key" in k]
        return str(max(values)) if values else str(row["max"])
    return str(row["max"])


def _ceiling(http: dict) -> str:
    paired = http.get("paired_ping_rps")
    return f" ({paired:.0f})" if paired else ""


def _pct(value) -> str:
    return "—" if value is None else f"{value:.0%}"
