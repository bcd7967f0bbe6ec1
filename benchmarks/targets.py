"""The issue's targets, checked against a run, and the sweeps' recommended defaults."""

from __future__ import annotations

from typing import Any

from .report import _median_row, _scen_key, corpus_files, summarize

# limits.md §7: read + xxh3 + zstd-3 on 2 processes, the two-core best case (MB/s).
TWO_CORE_LIMIT_MBPS = 398.0
# limits.md: the rate a client sees on the latency backend, to price stored bytes in time.
LINK_MBPS = 25.0


def _fmt(v: dict[str, Any]) -> str:
    return (f"{v['median']:.3f} s ({v['min']:.3f}-{v['max']:.3f}, n={v['n']})"
            if v["n"] > 1 else f"{v['median']:.3f} s (n=1)")


def _ratio_rows(summ: dict[Any, Any], scenario: str, peer: str, want: float,
                faster: bool = True, backends: tuple[str, ...] = ("s3", "s3-latency"),
                tool: str = "snapsync", corpus_prefix: str = "") -> list[dict[str, Any]]:
    """``faster``: value = peer ÷ snapsync, met when ≥ want; else snapsync ÷ peer ≤ want."""
    rows = []
    for (b, c, s, t), v in sorted(summ.items()):
        if s != scenario or t != tool or b not in backends or not c.startswith(corpus_prefix):
            continue
        p = summ.get((b, c, s, peer))
        if not p:
            continue
        ratio = p["median"] / v["median"] if faster else v["median"] / p["median"]
        rows.append({"backend": b, "corpus": c if tool == "snapsync" else f"{c}, {tool}",
                     "value": round(ratio, 2),
                     "met": ratio >= want if faster else ratio <= want,
                     "detail": f"{tool} {_fmt(v)}, {peer} {_fmt(p)}"})
    return rows


def _biggest_gen(summ: dict[Any, Any], files: dict[str, int]) -> str | None:
    gens = [c for (b, c, _s, _t) in summ if b == "file" and c.startswith("gen")
            and c[3:4].isdigit() and c in files]
    return max(gens, key=lambda c: files[c]) if gens else None


def evaluate(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's and 12's targets (and the suite's standing ones), each measured or not."""
    summ = summarize(run["records"])
    files = corpus_files(run)
    out: list[dict[str, Any]] = []

    def add(issue: str, name: str, rows: list[dict[str, Any]], threshold: str) -> None:
        for r in rows:
            out.append({"issue": issue, "target": name, "threshold": threshold, **r})
        if not rows:
            out.append({"issue": issue, "target": name, "threshold": threshold, "met": None,
                        "detail": "not measured in this run"})

    big = _biggest_gen(summ, files)
    # ---- issue 11
    add("11", "cold pull vs restic restore (S3, real history)",
        _ratio_rows(summ, "pull-cold", "restic", 0.7, faster=False, backends=("s3",),
                    corpus_prefix="history"), "≤ 0.7x")
    rows = []
    if big:
        v = summ.get(("file", big, "pull-cold", "snapsync"))
        cp = summ.get(("file", big, "pull-warm", "cp -r"))
        if v and cp:
            r = v["median"] / cp["median"]
            rows.append({"backend": "file", "corpus": f"{big} ({files[big]:,} files)",
                         "value": round(r, 2), "met": r <= 1.3,
                         "detail": f"snapsync {_fmt(v)}, cp -r {_fmt(cp)}"})
    add("11", "cold pull vs cp -r (file://, 100k files)", rows, "≤ 1.3x")
    rows = []
    for (b, c, s, t), v in sorted(summ.items()):
        if s == "pull-warm" and t == "snapsync" and (b, c, s, "cp -r") in summ:
            cp = summ[(b, c, s, "cp -r")]
            r = v["median"] / cp["median"]
            rows.append({"backend": b, "corpus": c, "value": round(r, 2), "met": r <= 1.2,
                         "detail": f"snapsync {_fmt(v)}, cp -r {_fmt(cp)}"})
    add("11", "warm pull into a fresh folder vs cp -r", rows, "≤ 1.2x")
    rows = []
    for (b, c) in sorted({(b, c) for (b, c, s, t) in summ if s.startswith("pull-prev-")}):
        per = []
        for (bb, cc, s, t), v in sorted(summ.items(), key=lambda kv: _scen_key(kv[0][2])):
            if (bb, cc) == (b, c) and t == "snapsync" and s.startswith("pull-prev-"):
                p = summ.get((b, c, s, "restic"))
                if p:
                    per.append((s, v["median"] / p["median"], v, p))
        if per:
            ratios = sorted(x[1] for x in per)
            med = ratios[len(ratios) // 2]
            rows.append({"backend": b, "corpus": c, "value": round(med, 2),
                         "met": max(ratios) <= 0.5,
                         "detail": "median over releases; " + "; ".join(
                             f"{s}: {v['median']:.3f} s vs {p['median']:.3f} s ({r:.2f}x)"
                             for s, r, v, p in per)})
    add("11", "incremental pull of the next release into the previous tree vs restic", rows,
        "≤ 0.5x")
    rows = []
    if big:
        v = summ.get(("file", big, "noop-push", "snapsync"))
        f = summ.get(("file", big, "noop-push", "find"))
        w = summ.get(("file", big, "noop-push", "py-walk"))
        if v and f:
            r = v["median"] / f["median"]
            rows.append({"backend": "file", "corpus": f"{big} ({files[big]:,} files)",
                         "value": round(r, 2), "met": r <= 2.0,
                         "detail": f"snapsync {_fmt(v)}, find {_fmt(f)}" + (
                             f", py-walk {_fmt(w)} ({v['median'] / w['median']:.2f}x)"
                             if w else "")})
    add("11", "no-op push vs find stat walk, process start included (100k files)", rows,
        "≤ 2x")
    add("11", "first push vs restic backup (100k files)",
        _ratio_rows(summ, "first-push", "restic", 0.6, faster=False, backends=("file",),
                    corpus_prefix=big or "-"), "≤ 0.6x")
    tp = run.get("throughput") or {}
    if tp:
        frac = tp["mb_per_s"] / TWO_CORE_LIMIT_MBPS
        out.append({"issue": "11", "target": "read + hash + compress vs two-core limit",
                    "threshold": "≥ 70%", "backend": "file (dry run)", "corpus": tp["corpus"],
                    "value": round(frac, 2), "met": frac >= 0.7,
                    "detail": f"{tp['mb_per_s']} MB/s median of {tp['walls']} s "
                              f"(best {tp.get('mb_per_s_best', '?')} MB/s) vs "
                              f"{TWO_CORE_LIMIT_MBPS} MB/s (limits.md §7)"})
    else:
        add("11", "read + hash + compress vs two-core limit", [], "≥ 70%")
    rows = []
    if big:
        for kind, scen in (("push", ("first-push", "noop-push")),
                           ("pull", ("pull-cold", "pull-warm"))):
            vals = [(summ[("file", big, s, "snapsync")]["rss"], s) for s in scen
                    if ("file", big, s, "snapsync") in summ]
            if vals:
                top = max(vals)
                rows.append({"backend": "file", "corpus": f"{big}, {kind}",
                             "value": round(top[0]), "met": top[0] <= 100,
                             "detail": "max over reps: " + ", ".join(
                                 f"{s} {r:.0f} MB" for r, s in vals) + (
                                 f"; restic {summ[('file', big, scen[0], 'restic')]['rss']:.0f}"
                                 " MB" if ("file", big, scen[0], "restic") in summ else "")})
    add("11", "peak RSS at 100k files (external)", rows, "≤ 100 MB")
    rows = []
    st = run.get("startup") or {}
    for name, rs in (st.get("rows") or {}).items():
        # The default engine (obstore for s3://); the s3fs engine's rows are in the table.
        if name.split()[0] in ("first-push", "noop-push", "pull-cold") and name.endswith(
                " snapsync"):
            ok = [r for r in rs if r.get("ok", True)]
            if ok:
                top = max(r["rss_mb"] for r in ok)
                rows.append({"backend": "s3", "corpus": f"{st['corpus']}, {name}",
                             "value": round(top), "met": top <= 60,
                             "detail": f"max of {len(ok)} fresh processes"})
    add("11", "peak RSS for a 5k-file tree", rows, "≤ 60 MB")
    # ---- issue 12
    rows = []
    for eng, v in (st.get("imports") or {}).items():
        if "push_import_ms" in v:
            worst = max(v["push_import_ms"], v["pull_import_ms"])
            rows.append({"backend": "s3", "corpus": eng, "value": worst,
                         "met": worst <= 100,
                         "detail": f"push {v['push_import_ms']} ms, pull {v['pull_import_ms']}"
                                   f" ms (python -X importtime, minus python -c pass); loaded: "
                                   f"{', '.join(v['push_sdk']) or 'none'}"})
    add("12", "imports for a push or pull to S3", rows, "≤ 100 ms")
    rows = []
    for name, rs in (st.get("rows") or {}).items():
        if name.startswith("noop-push "):
            v = _median_row(rs)
            if v:
                walk = _median_row(st["rows"].get("py-walk", []))
                rows.append({"backend": "s3", "corpus": f"{st['corpus']}, {name.split()[1]}",
                             "value": round(v["median"], 3), "met": v["median"] <= 0.30,
                             "detail": f"{_fmt(v)}" + (
                                 f"; floor (python start + stat walk) {_fmt(walk)}, "
                                 f"{v['median'] / walk['median']:.1f}x" if walk else "")})
    add("12", "no-op push, fresh process (wall s)", rows, "≤ 0.30 s")
    for scen in ("first-push", "pull-cold"):
        rows = []
        for tool in ("snapsync", "snapsync-fsspec"):
            rows += _ratio_rows(summ, scen, "rclone", 1.5, backends=("s3-latency",), tool=tool)
        add("12", f"{scen} vs rclone behind latency", rows, "≥ 1.5x")
    # ---- standing targets of the suite
    add("5", "first push vs prefect-aws push_to_s3",
        _ratio_rows(summ, "first-push", "prefect-aws", 20), "≥ 20x")
    add("5", "cold pull vs prefect-aws pull_from_s3",
        _ratio_rows(summ, "pull-cold", "prefect-aws", 20), "≥ 20x")
    worst = 0
    n = 0
    for r in run["records"]:
        if r["tool"] in ("snapsync", "snapsync-fsspec") and r.get("ok") and (
                "push" in r["scenario"] or r["scenario"].startswith(("edit", "insert", "next"))):
            ts = r.get("tool_stats") or {}
            if "packs_uploaded" in ts:
                extra = (ts.get("requests") or {}).get("PUT", 0) - ts["packs_uploaded"]
                worst = max(worst, extra)
                n += 1
    if n:
        out.append({"issue": "5", "target": "requests per push ∝ new packs",
                    "threshold": "PUT - packs ≤ 4", "backend": "all", "corpus": "all",
                    "value": worst, "met": worst <= 4,
                    "detail": f"{n} pushes; at most {worst} PUTs besides packs (config, "
                              "manifest, log entry, ref); GET/LIST are a constant per push"})
    return out


def recommend(run: dict[str, Any]) -> dict[str, str]:
    """One line per sweep: the best point by the sweep's own criterion, with numbers."""
    out: dict[str, str] = {}
    for name, sw in (run.get("sweeps") or {}).items():
        rows = [r for r in sw["rows"] if r.get("ok")]
        if not rows:
            continue
        default = next((r for r in rows if r.get("default")), rows[0])
        if name == "level":
            # Time to push over the latency backend's link: CPU-side push + stored bytes.
            def cost(r: dict[str, Any]) -> float:
                return r["first_push"] + r["stored_bytes"] / (LINK_MBPS * 1e6)
            crit = f"first push + upload of the stored bytes at {LINK_MBPS:g} MB/s"
        elif name == "chunker":
            base = min(r["first_push"] for r in rows)

            def cost(r: dict[str, Any], base: float = base) -> float:
                # Bytes an insert re-uploads, priced at the link rate, plus push time.
                return r["first_push"] + (r.get("insert_uploaded") or 0) / (
                    LINK_MBPS * 1e6) + max(0.0, r["first_push"] - 1.2 * base)
            crit = "first push + re-upload after a 100-byte insert"
        else:
            def cost(r: dict[str, Any]) -> float:
                return r["first_push"] + r.get("cold_pull", 0.0)
            crit = "first push + cold pull"
        best = min(rows, key=cost)
        gain = (cost(default) - cost(best)) / cost(default) if cost(default) else 0.0
        verdict = ("keep the default" if best is default or gain < 0.1 else
                   f"consider {best['label']} ({gain:.0%} better)")
        out[name] = (f"{name} on {sw['backend']}: best {best['label']} "
                     f"(cost {cost(best):.2f} s) vs default {default['label']} "
                     f"({cost(default):.2f} s) by {crit}: {verdict}")
    return out
