"""Turn a run's JSON into the Markdown table (ratios first) and the PNG plots."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

PEERS = ["prefect-aws", "naive", "rclone", "restic"]
FLOORS = {"noop-push": "stat-walk", "pull-warm": "cp -r"}
TOOL_ORDER = ["snapsync", *PEERS, "stat-walk", "cp -r"]
COLORS = {"snapsync": "#1b9e77", "prefect-aws": "#d95f02", "naive": "#e7298a",
          "rclone": "#7570b3", "restic": "#66a61e", "stat-walk": "#999999", "cp -r": "#bbbbbb"}
SCEN_ORDER = ["first-push", "noop-push", "edit-one-file", "insert-100B", "next-release-1",
              "next-release-2", "next-release-3", "next-release-4", "pull-cold", "pull-warm",
              "pull-prev"]


def _scen_key(s: str) -> int:
    return SCEN_ORDER.index(s) if s in SCEN_ORDER else len(SCEN_ORDER)


def summarize(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """(backend, corpus, scenario, tool) -> median/min/max of wall, cpu, rss, requests."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("ok") and r["scenario"] != "prepare":
            groups[(r["backend"], r["corpus"], r["scenario"], r["tool"])].append(r)
    out = {}
    for key, rows in groups.items():
        walls = [r["wall"] for r in rows]
        req: dict[str, int] = {}
        sent = recv = None
        if all("server" in r for r in rows):
            srv = rows[0]["server"]  # requests are deterministic enough: first rep
            req = {k: v for k, v in srv.items() if k.isupper()}
            sent, recv = srv.get("bytes_sent", 0), srv.get("bytes_received", 0)
        elif rows[0].get("tool_stats", {}).get("requests"):
            req = rows[0]["tool_stats"]["requests"]
        out[key] = {"median": statistics.median(walls), "min": min(walls), "max": max(walls),
                    "n": len(walls), "cpu": statistics.median(r["cpu"] for r in rows),
                    "rss": max(r["rss_mb"] for r in rows), "requests": req,
                    "sent": sent, "received": recv,
                    "verified": all(r.get("verified", True) for r in rows)}
    return out


def _fmt_s(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def _ratio(peer: float, snap: float) -> str:
    r = peer / snap if snap > 0 else float("inf")
    return f"**{r:.1f}x**" if r >= 1 else f"{r:.2f}x"


def markdown(run: dict[str, Any]) -> str:
    summ = summarize(run["records"])
    lines: list[str] = []
    meta = run["meta"]
    lines.append(f"Run `{meta['run_id']}` ({meta['mode']}), {meta['machine']}; "
                 f"{meta['reps']} repetitions per cell, median shown, spread in the JSON.")
    lines.append("")
    lines.append("**Ratio = peer's median wall time ÷ snapsync's** (higher is better for "
                 "snapsync; below 1 means the peer was faster). For `noop-push` and "
                 "`pull-warm` the *floor* column is snapsync ÷ the floor (bare stat walk, "
                 "`cp -r`; lower is better, target ≤ 1.5).")
    by_bc: dict[tuple[str, str], set[str]] = defaultdict(set)
    for b, c, s, _t in summ:
        by_bc[(b, c)].add(s)
    for (b, c) in sorted(by_bc, key=lambda x: (["file", "s3", "s3-latency"].index(x[0])
                                               if x[0] in ("file", "s3", "s3-latency") else 9,
                                               x[1])):
        peers = [p for p in PEERS if any((b, c, s, p) in summ for s in by_bc[(b, c)])]
        lines.append("")
        lines.append(f"### {b} · {c}")
        lines.append("")
        head = ["scenario", *[f"vs {p}" for p in peers], "floor", "snapsync s",
                *[f"{p} s" for p in peers], "snapsync req", "snapsync RSS MB"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * len(head)) + "|")
        for s in sorted(by_bc[(b, c)], key=_scen_key):
            snap = summ.get((b, c, s, "snapsync"))
            if snap is None:
                continue
            cells = [s]
            for p in peers:
                pr = summ.get((b, c, s, p))
                cells.append(_ratio(pr["median"], snap["median"]) if pr else "-")
            fl = summ.get((b, c, s, FLOORS.get(s, "")))
            cells.append(f"{snap['median'] / fl['median']:.1f}x {FLOORS[s]}" if fl else "")
            cells.append(_fmt_s(snap["median"]) + ("" if snap["verified"] else " ✗"))
            for p in peers:
                pr = summ.get((b, c, s, p))
                cells.append(_fmt_s(pr["median"]) + ("" if pr["verified"] else " ✗")
                             if pr else "-")
            cells.append(" ".join(f"{k}:{v}" for k, v in sorted(snap["requests"].items())))
            cells.append(f"{snap['rss']:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    if run.get("skipped"):
        lines.append("")
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in run["skipped"].items()))
    return "\n".join(lines) + "\n"


def requests_table(run: dict[str, Any]) -> str:
    """Requests and bytes per push/pull, per tool, on the S3 server (server-side counts)."""
    summ = summarize(run["records"])
    lines = ["| backend · corpus | scenario | tool | requests | sent MB | received MB | CPU s | "
             "peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for (b, c, s, t), v in sorted(summ.items(), key=lambda kv: (
            kv[0][0], kv[0][1], _scen_key(kv[0][2]),
            TOOL_ORDER.index(kv[0][3]) if kv[0][3] in TOOL_ORDER else 99)):
        if b != "s3" or t in ("stat-walk", "cp -r"):
            continue
        req = " ".join(f"{k}:{n}" for k, n in sorted(v["requests"].items())) or "-"
        sent = f"{v['sent'] / 1e6:.1f}" if v["sent"] is not None else "-"
        recv = f"{v['received'] / 1e6:.1f}" if v["received"] is not None else "-"
        lines.append(f"| {b} · {c} | {s} | {t} | {req} | {sent} | {recv} | {v['cpu']:.2f} | "
                     f"{v['rss']:.0f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plots


def plots(run: dict[str, Any], outdir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = summarize(run["records"])
    made: list[Path] = []
    combos = sorted({(b, c) for b, c, _s, _t in summ},
                    key=lambda x: (["file", "s3", "s3-latency"].index(x[0])
                                   if x[0] in ("file", "s3", "s3-latency") else 9, x[1]))
    # 1. time per scenario per tool, one panel per backend x corpus
    if combos:
        ncol = 2
        nrow = (len(combos) + 1) // 2
        fig, axes = plt.subplots(nrow, ncol, figsize=(13, 4.2 * nrow), squeeze=False)
        for ax, (b, c) in zip(axes.flat, combos, strict=False):
            scen = sorted({s for bb, cc, s, _t in summ if (bb, cc) == (b, c)}, key=_scen_key)
            tools = [t for t in TOOL_ORDER if any((b, c, s, t) in summ for s in scen)]
            width = 0.8 / max(1, len(tools))
            for i, t in enumerate(tools):
                xs, ys, lo, hi = [], [], [], []
                for j, s in enumerate(scen):
                    v = summ.get((b, c, s, t))
                    if v:
                        xs.append(j + (i - (len(tools) - 1) / 2) * width)
                        ys.append(v["median"])
                        lo.append(v["median"] - v["min"])
                        hi.append(v["max"] - v["median"])
                ax.bar(xs, ys, width, yerr=[lo, hi], label=t, color=COLORS.get(t),
                       error_kw={"elinewidth": 0.8, "capsize": 1.5})
            ax.set_yscale("log")
            ax.set_xticks(range(len(scen)))
            ax.set_xticklabels(scen, rotation=25, ha="right", fontsize=8)
            ax.set_ylabel("wall seconds (log)")
            ax.set_title(f"{b} · {c}", fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
        for ax in list(axes.flat)[len(combos):]:
            ax.axis("off")
        seen: dict[str, Any] = {}
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
                seen.setdefault(lab, h)
        names = sorted(seen, key=lambda t: TOOL_ORDER.index(t) if t in TOOL_ORDER else 99)
        fig.legend([seen[n] for n in names], names, loc="upper center", ncol=7,
                   fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.975))
        fig.suptitle("Wall time per scenario (median of repetitions; bars show min-max)",
                     y=0.995, fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        p = outdir / f"{stem}-time.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    # 2. requests and bytes per scenario per tool (S3 server counts)
    s3c = [(b, c) for b, c in combos if b == "s3"]
    if s3c:
        fig, axes = plt.subplots(len(s3c), 2, figsize=(13, 3.8 * len(s3c)), squeeze=False)
        for row, (b, c) in zip(axes, s3c, strict=False):
            scen = sorted({s for bb, cc, s, _t in summ if (bb, cc) == (b, c)}, key=_scen_key)
            tools = [t for t in TOOL_ORDER[:5] if any((b, c, s, t) in summ for s in scen)]
            width = 0.8 / max(1, len(tools))
            for i, t in enumerate(tools):
                xs, req, mb = [], [], []
                for j, s in enumerate(scen):
                    v = summ.get((b, c, s, t))
                    if v and v["sent"] is not None:
                        xs.append(j + (i - (len(tools) - 1) / 2) * width)
                        req.append(max(1, sum(v["requests"].values())))
                        mb.append(max(0.001, (v["sent"] + v["received"]) / 1e6))
                row[0].bar(xs, req, width, label=t, color=COLORS.get(t))
                row[1].bar(xs, mb, width, label=t, color=COLORS.get(t))
            for ax, ylabel in zip(row, ("requests (log)", "MB sent + received (log)"), strict=True):
                ax.set_yscale("log")
                ax.set_xticks(range(len(scen)))
                ax.set_xticklabels(scen, rotation=25, ha="right", fontsize=8)
                ax.set_ylabel(ylabel)
                ax.set_title(f"{b} · {c}", fontsize=10)
                ax.grid(axis="y", which="both", alpha=0.3)
        h, lab = axes[0][0].get_legend_handles_labels()
        fig.legend(h, lab, loc="upper center", ncol=5, fontsize=9, frameon=False,
                   bbox_to_anchor=(0.5, 0.965))
        fig.suptitle("Requests and bytes on the wire per operation (server-side counts)",
                     fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        p = outdir / f"{stem}-requests.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    # 3. the headline: how many times faster snapsync is than each peer
    lat = [(b, c) for b, c in combos if b in ("s3", "s3-latency")]
    if lat:
        fig, axes = plt.subplots(1, len(lat), figsize=(5.2 * len(lat), 4.2), squeeze=False)
        for ax, (b, c) in zip(axes[0], lat, strict=True):
            scen = sorted({s for bb, cc, s, _t in summ if (bb, cc) == (b, c)}, key=_scen_key)
            width = 0.8 / len(PEERS)
            for i, p in enumerate(PEERS):
                xs, ys = [], []
                for j, sc in enumerate(scen):
                    snap, peer = summ.get((b, c, sc, "snapsync")), summ.get((b, c, sc, p))
                    if snap and peer:
                        xs.append(j + (i - (len(PEERS) - 1) / 2) * width)
                        ys.append(peer["median"] / snap["median"])
                ax.bar(xs, ys, width, label=p, color=COLORS.get(p))
            ax.axhline(1, color="black", lw=0.8)
            ax.axhline(20, color="#d95f02", lw=0.8, ls="--")
            ax.text(len(scen) - 0.5, 21, "20x target (vs prefect-aws)", ha="right",
                    fontsize=7, color="#d95f02")
            ax.set_yscale("log")
            ax.set_xticks(range(len(scen)))
            ax.set_xticklabels(scen, rotation=25, ha="right", fontsize=8)
            ax.set_ylabel("peer time / snapsync time (log)")
            ax.set_title(f"{b} · {c}", fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
        h, lab = axes[0][0].get_legend_handles_labels()
        fig.legend(h, lab, loc="upper center", ncol=4, fontsize=9, frameon=False,
                   bbox_to_anchor=(0.5, 0.94))
        fig.suptitle("How many times faster snapsync is (above 1 = snapsync faster)",
                     fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.89))
        p_ = outdir / f"{stem}-speedup.png"
        fig.savefig(p_, dpi=90)
        plt.close(fig)
        made.append(p_)
    # 4. sweeps
    sweeps = {f"{k} ({v['backend']})": v for k, v in (run.get("sweeps") or {}).items()}
    if sweeps:
        n = len(sweeps)
        nrow = (n + 1) // 2
        fig, axes = plt.subplots(nrow, 2, figsize=(12, 4.3 * nrow), squeeze=False)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        for ax, (name, sw) in zip(axes.flat, sweeps.items(), strict=False):
            rows = [r for r in sw["rows"] if r.get("ok")]
            labels = [r["label"] for r in rows]
            xs = range(len(rows))
            ax.plot(xs, [r["first_push"] for r in rows], "o-", label="first push s",
                    color=COLORS["snapsync"])
            if any("cold_pull" in r for r in rows):
                ax.plot(xs, [r.get("cold_pull", float("nan")) for r in rows], "s--",
                        label="cold pull s", color="#7570b3")
            if any("insert_push" in r for r in rows):
                ax.plot(xs, [r.get("insert_push", float("nan")) for r in rows], "^:",
                        label="insert push s", color="#d95f02")
            ax.set_ylabel("seconds")
            ax.set_xticks(list(xs))
            ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
            for i, r in enumerate(rows):
                if r.get("default"):
                    ax.axvline(i, color="#999999", ls=":", lw=1)
            ax2 = ax.twinx()
            key = "insert_uploaded" if name.startswith("chunker") else "stored_bytes"
            ax2.plot(xs, [(r.get(key) or 0) / 1e6 for r in rows], "x-", color="#666666",
                     label="MB uploaded by insert" if key == "insert_uploaded"
                     else "MB stored")
            ax2.set_ylabel("MB uploaded by insert" if key == "insert_uploaded" else "MB stored",
                           color="#666666")
            top2 = max([(r.get(key) or 0) / 1e6 for r in rows] + [0.001])
            ax2.set_ylim(0, top2 * 1.6)  # headroom for the legend
            top = max([r["first_push"] for r in rows]
                      + [r.get("cold_pull", 0) for r in rows] + [0.001])
            ax.set_ylim(0, top * 1.6)
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", ncol=2)
            ax.set_title(f"sweep: {name} · dotted = default", fontsize=10)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        p = outdir / f"{stem}-sweeps.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    return made


def full_markdown(run: dict[str, Any]) -> str:
    """Targets, ratio tables, store sizes, requests, throughput, sweeps: the whole report."""
    lines = ["## Targets", "", "| target | threshold | backend · corpus | value | met | detail |",
             "|---|---|---|---|---|---|"]
    for t in run.get("targets", []):
        met = {True: "✅", False: "❌", None: "-"}[t.get("met")]
        val = t.get("value", "")
        if isinstance(val, float) and "RSS" not in t["target"] and "PUT" not in t["threshold"]:
            val = f"{val:.0%}" if "two-core" in t["target"] else f"{val:.2f}x"
        lines.append(f"| {t['target']} | {t['threshold']} | {t.get('backend', '')} · "
                     f"{t.get('corpus', '')} | {val} | {met} | {t.get('detail', '')} |")
    lines += ["", "## Time ratios", "", markdown(run)]
    for b in run.get("backends", []):
        if b.get("note"):
            lines.append(f"- **{b['name']}**: {b['note']}")
    if run.get("store"):
        lines += ["", "## Store after the last push (objects, MB)", "",
                  "| backend · corpus | " + " | ".join(TOOL_ORDER[:5]) + " |",
                  "|---|" + "---|" * 5]
        cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for r in run["store"]:
            if r["rep"] == 0:
                cells[(r["backend"], r["corpus"])][r["tool"]] = (
                    f"{r['objects']} obj, {r['bytes'] / 1e6:.1f}")
        for (b, c), row in sorted(cells.items()):
            lines.append(f"| {b} · {c} | " + " | ".join(row.get(t, "-")
                                                         for t in TOOL_ORDER[:5]) + " |")
    lines += ["", "## Requests, bytes, CPU and memory per operation (S3 server counts)", "",
              requests_table(run)]
    tp = run.get("throughput")
    if tp:
        lines += ["## Hashing + compression", "",
                  f"Dry-run push (read, cut, hash, zstd-3; nothing written) of {tp['corpus']} "
                  f"({tp['files']} files, {tp['mb']} MB): best {tp['mb_per_s']} MB/s "
                  f"(walls {tp['walls']} s, CPU {tp['cpu']} s).", ""]
    if run.get("sweeps"):
        lines += ["## Sweeps", ""]
        for name, sw in run["sweeps"].items():
            lines += [f"### {name} ({sw['backend']}, {sw['corpus']})", "",
                      "| point | first push s | CPU s | stored MB | insert push s | "
                      "insert uploaded MB | cold pull s | push PUTs | pull GETs |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in sw["rows"]:
                if not r.get("ok"):
                    lines.append(f"| {r['label']} | failed: {r.get('error', '')[:80]} |")
                    continue
                fr = r.get("first_requests") or {}
                pr = r.get("pull_requests") or {}
                ins = r.get("insert_uploaded")
                lines.append(
                    f"| {r['label']}{' (default)' if r.get('default') else ''} | "
                    f"{r['first_push']:.2f} | {r['first_cpu']:.2f} | "
                    f"{r['stored_bytes'] / 1e6:.1f} | {r.get('insert_push', '-')} | "
                    f"{ins / 1e6 if ins is not None else 0:.2f} | {r.get('cold_pull', '-')} | "
                    f"{fr.get('PUT', '-')} | {pr.get('GET', '-')} |")
            rec = (run.get("recommendations") or {}).get(name)
            if rec:
                lines += ["", f"Recommendation: {rec}"]
            lines.append("")
    return "\n".join(lines) + "\n"
