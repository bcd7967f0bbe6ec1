"""The issue's targets, checked against a run, and the sweeps' recommended defaults."""

from __future__ import annotations

from typing import Any

from .report import summarize

# limits.md §7: read + xxh3 + zstd-3 on 2 processes, the two-core best case (MB/s).
TWO_CORE_LIMIT_MBPS = 398.0
# limits.md: the rate a client sees on the latency backend, to price stored bytes in time.
LINK_MBPS = 25.0


def _ratio_rows(summ: dict[Any, Any], scenario: str, peer: str, want: float,
                faster: bool = True) -> list[dict[str, Any]]:
    rows = []
    for (b, c, s, t), v in sorted(summ.items()):
        if s != scenario or t != "snapsync" or b == "file":
            continue
        p = summ.get((b, c, s, peer))
        if not p:
            continue
        ratio = p["median"] / v["median"]
        rows.append({"backend": b, "corpus": c, "value": round(ratio, 2),
                     "met": ratio >= want if faster else ratio <= want,
                     "detail": f"snapsync {v['median']:.3f} s, {peer} {p['median']:.3f} s"})
    return rows


def evaluate(run: dict[str, Any]) -> list[dict[str, Any]]:
    summ = summarize(run["records"])
    out: list[dict[str, Any]] = []

    def add(name: str, rows: list[dict[str, Any]], threshold: str) -> None:
        for r in rows:
            out.append({"target": name, "threshold": threshold, **r})
        if not rows:
            out.append({"target": name, "threshold": threshold, "met": None,
                        "detail": "not measured in this run"})

    add("first push vs prefect-aws push_to_s3", _ratio_rows(summ, "first-push", "prefect-aws",
                                                            20), "≥ 20x")
    add("first push vs rclone", _ratio_rows(summ, "first-push", "rclone", 1), "> 1x")
    add("first push vs restic", _ratio_rows(summ, "first-push", "restic", 1), "> 1x")
    add("cold pull vs prefect-aws pull_from_s3", _ratio_rows(summ, "pull-cold", "prefect-aws",
                                                             20), "≥ 20x")
    add("cold pull vs rclone", _ratio_rows(summ, "pull-cold", "rclone", 1), "> 1x")
    for scen, floor, name in (("noop-push", "stat-walk", "no-op push vs bare stat walk"),
                              ("pull-warm", "cp -r", "warm pull into fresh folder vs cp -r")):
        rows = []
        for (b, c, s, t), v in sorted(summ.items()):
            if s == scen and t == "snapsync" and (b, c, s, floor) in summ:
                f = summ[(b, c, s, floor)]["median"]
                rows.append({"backend": b, "corpus": c, "value": round(v["median"] / f, 2),
                             "met": v["median"] / f <= 1.5,
                             "detail": f"snapsync {v['median']:.3f} s, {floor} {f:.3f} s"})
        add(name, rows, "≤ 1.5x")
    sc = run.get("scale_check") or {}
    if sc.get("noop_ratio"):
        out.append({"target": "no-op push vs bare stat walk", "threshold": "≤ 1.5x",
                    "backend": "file", "corpus": f"{sc['corpus']} ({sc['files']} files)",
                    "value": sc["noop_ratio"], "met": sc["noop_ratio"] <= 1.5,
                    "detail": f"snapsync {sc['noop_push']} s, stat walk {sc['stat_walk']} s"})
        out.append({"target": "warm pull into fresh folder vs cp -r", "threshold": "≤ 1.5x",
                    "backend": "file", "corpus": f"{sc['corpus']} ({sc['files']} files)",
                    "value": sc["warm_ratio"], "met": sc["warm_ratio"] <= 1.5,
                    "detail": f"snapsync {sc['pull_warm']} s, cp -r {sc['cp_r']} s"})
    tp = run.get("throughput") or {}
    if tp:
        frac = tp["mb_per_s"] / TWO_CORE_LIMIT_MBPS
        out.append({"target": "hash + compress vs two-core limit", "threshold": "≥ 70%",
                    "backend": "file (dry run)", "corpus": tp["corpus"],
                    "value": round(frac, 2), "met": frac >= 0.7,
                    "detail": f"{tp['mb_per_s']} MB/s vs {TWO_CORE_LIMIT_MBPS} MB/s "
                              "(limits.md §7, read+xxh3+zstd-3, 2 processes)"})
    # Requests per push: PUTs beyond the new packs are a constant (config, manifest, log, ref).
    worst = 0
    n = 0
    for r in run["records"]:
        if (r["tool"] == "snapsync" and r.get("ok") and "push" in r["scenario"]) or (
                r["tool"] == "snapsync" and r["scenario"].startswith(("edit", "insert", "next"))):
            ts = r.get("tool_stats") or {}
            if "packs_uploaded" in ts:
                extra = (ts.get("requests") or {}).get("PUT", 0) - ts["packs_uploaded"]
                worst = max(worst, extra)
                n += 1
    if n:
        out.append({"target": "requests per push ∝ new packs", "threshold": "PUT - packs ≤ 4",
                    "backend": "all", "corpus": "all", "value": worst, "met": worst <= 4,
                    "detail": f"{n} pushes; at most {worst} PUTs besides packs (config, "
                              "manifest, log entry, ref); GET/LIST are a constant per push"})
    rss = [(r["rss_mb"], r["corpus"], r["scenario"]) for r in run["records"]
           if r["tool"] == "snapsync" and r.get("ok")]
    if rss:
        top = max(rss)
        big = run.get("rss_check")
        if big:
            out.append({"target": "peak RSS, 100k files / 2 GB", "threshold": "< 200 MB",
                        "backend": big["backend"], "corpus": big["corpus"],
                        "value": big["rss_mb"], "met": big["rss_mb"] < 200,
                        "detail": big["detail"]})
        else:
            out.append({"target": "peak RSS, 100k files / 2 GB", "threshold": "< 200 MB",
                        "backend": "all", "corpus": top[1], "value": top[0], "met": None,
                        "detail": f"not run at 100k files here (full mode); largest snapsync "
                                  f"peak in this run {top[0]:.0f} MB ({top[2]}, {top[1]})"})
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
