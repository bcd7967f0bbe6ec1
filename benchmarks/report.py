"""Turn a run's JSON into the Markdown table (ratios first) and the PNG plots."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

PEERS = ["snapsync-fsspec", "prefect-aws", "naive", "rclone", "restic"]
FLOOR_TOOLS = ["find", "py-walk", "stat-walk", "cp -r"]
# scenario -> [(scenario the floor row is recorded under, floor tool)]
FLOORS = {"noop-push": [("noop-push", "find"), ("noop-push", "py-walk")],
          "pull-warm": [("pull-warm", "cp -r")], "pull-cold": [("pull-warm", "cp -r")]}
TOOL_ORDER = ["snapsync", *PEERS, *FLOOR_TOOLS]
COLORS = {"snapsync": "#1b9e77", "snapsync-fsspec": "#a6d854", "prefect-aws": "#d95f02",
          "naive": "#e7298a", "rclone": "#7570b3", "restic": "#66a61e", "stat-walk": "#999999",
          "find": "#777777", "py-walk": "#aaaaaa", "cp -r": "#bbbbbb"}
SCEN_ORDER = ["first-push", "noop-push", "edit-one-file", "insert-100B",
              *[f"next-release-{i}" for i in range(1, 10)], "pull-cold", "pull-warm",
              "pull-prev", *[f"pull-prev-{i}" for i in range(1, 10)]]


def _scen_key(s: str) -> int:
    return SCEN_ORDER.index(s) if s in SCEN_ORDER else len(SCEN_ORDER)


def _tool_key(t: str) -> int:
    return TOOL_ORDER.index(t) if t in TOOL_ORDER else len(TOOL_ORDER)


def floor_of(summ: dict[Any, Any], b: str, c: str, s: str) -> list[tuple[str, dict[str, Any]]]:
    """The floors measured for (backend, corpus, scenario): [(floor tool, its summary)]."""
    out = []
    for fs, ft in FLOORS.get(s.rstrip("-0123456789") if s.startswith("pull-prev-") else s, []):
        v = summ.get((b, c, fs, ft))
        if v:
            out.append((ft, v))
    return out


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
                    "user": (statistics.median(r["user"] for r in rows)
                             if all("user" in r for r in rows) else None),
                    "sys": (statistics.median(r["sys"] for r in rows)
                            if all("sys" in r for r in rows) else None),
                    "rss": max(r["rss_mb"] for r in rows),
                    "rss_median": statistics.median(r["rss_mb"] for r in rows),
                    "requests": req,
                    "sent": sent, "received": recv,
                    "verified": all(r.get("verified", True) for r in rows)}
    return out


def _fmt_s(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def _ratio(peer: float, snap: float) -> str:
    r = peer / snap if snap > 0 else float("inf")
    return f"**{r:.1f}x**" if r >= 1 else f"{r:.2f}x"


def markdown(run: dict[str, Any], only: set[tuple[str, str]] | None = None,
             heading: str = "###") -> str:
    """Ratio tables, one per (backend, corpus); ``only`` keeps just those pairs."""
    summ = summarize(run["records"])
    if only is not None:
        summ = {k: v for k, v in summ.items() if (k[0], k[1]) in only}
    lines: list[str] = []
    meta = run["meta"]
    lines.append(f"Run `{meta['run_id']}` ({meta['mode']}), {meta['machine']}; "
                 f"{meta['reps']} repetitions per cell, median shown, spread in the JSON.")
    lines.append("")
    lines.append("**Ratio = peer's median wall time ÷ snapsync's** (higher is better for "
                 "snapsync; below 1 means the peer was faster). The *floor* column is "
                 "snapsync ÷ the floor (lower is better): for `noop-push` a bare stat walk "
                 "in a fresh process (`find -printf`, and `py-walk` = interpreter start + "
                 "`scandir` walk), for pulls `cp -r` of the same tree into a fresh folder. "
                 "Every command is one fresh process, as users run it (prefect-aws and naive "
                 "run in a long-lived worker, imports excluded). The detail table below has "
                 "min-max, user and system CPU and peak RSS for every tool.")
    by_bc: dict[tuple[str, str], set[str]] = defaultdict(set)
    for b, c, s, _t in summ:
        by_bc[(b, c)].add(s)
    for (b, c) in sorted(by_bc, key=lambda x: (["file", "s3", "s3-latency"].index(x[0])
                                               if x[0] in ("file", "s3", "s3-latency") else 9,
                                               x[1])):
        peers = [p for p in PEERS if any((b, c, s, p) in summ for s in by_bc[(b, c)])]
        lines.append("")
        lines.append(f"{heading} {b} · {c}")
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
            cells.append(", ".join(f"{snap['median'] / v['median']:.2f}x {ft}"
                                   for ft, v in floor_of(summ, b, c, s)))
            cells.append(_fmt_s(snap["median"]) + ("" if snap["verified"] else " ✗"))
            for p in peers:
                pr = summ.get((b, c, s, p))
                cells.append(_fmt_s(pr["median"]) + ("" if pr["verified"] else " ✗")
                             if pr else "-")
            cells.append(" ".join(f"{k}:{v}" for k, v in sorted(snap["requests"].items())))
            cells.append(f"{snap['rss']:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    if run.get("skipped") and only is None:
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
    made += _plots_extra(run, outdir, stem)
    return made


def fmt_value(t: dict[str, Any]) -> str:
    """A target's measured value in the unit its threshold uses."""
    val = t.get("value", "")
    thr = t.get("threshold", "")
    if not isinstance(val, (int, float)) or isinstance(val, bool):
        return str(val)
    if "%" in thr:
        return f"{val:.0%}"
    if thr.endswith(" MB"):
        return f"{val:.0f} MB"
    if thr.endswith(" ms"):
        return f"{val:.0f} ms"
    if thr.endswith(" s"):
        return f"{val:.3f} s"
    if "PUT" in thr:
        return str(val)
    return f"{val:.2f}x"


def targets_table(targets: list[dict[str, Any]], run_label: str = "") -> str:
    head = "| issue | target | threshold | backend · corpus | measured | met | detail |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for t in targets:
        met = {True: "✅", False: "❌", None: "-"}[t.get("met")]
        where = f"{t.get('backend', '')} · {t.get('corpus', '')}" if t.get("backend") else ""
        if run_label:
            where = f"{where} ({run_label})" if where else run_label
        lines.append(f"| {t.get('issue', '')} | {t['target']} | {t['threshold']} | {where} | "
                     f"{fmt_value(t) if t.get('met') is not None or 'value' in t else ''} | "
                     f"{met} | {t.get('detail', '')} |")
    return "\n".join(lines) + "\n"


def _plots_extra(run: dict[str, Any], outdir: Path, stem: str) -> list[Path]:
    if run.get("meta", {}).get("mode") != "scale":
        return []
    made = [scale_plot(run, outdir, stem, b) for b in ("file", "s3")]
    return [p for p in made if p]


def full_markdown(run: dict[str, Any]) -> str:
    """Targets, ratio tables, store sizes, requests, throughput, sweeps: the whole report."""
    lines = ["## Targets", "", targets_table(run.get("targets", []))]
    lines += ["", "## Time ratios", "", markdown(run)]
    for b in run.get("backends", []):
        if b.get("note"):
            lines.append(f"- **{b['name']}**: {b['note']}")
    if run.get("meta", {}).get("pull_dir"):
        lines.append(f"- {run['meta']['pull_dir']}")
    for b in ("file", "s3") if run.get("meta", {}).get("mode") == "scale" else ():
        sc = scale_table(run, b)
        if sc:
            lines += ["", f"## Against file count ({b})", "", sc]
    st = startup_table(run)
    if st:
        lines += ["", "## Start-up, one fresh process per command (issue 12)", "", st]
    lines += ["", "## Every cell: wall (min-max), CPU, peak RSS", "",
              "Peak RSS is measured from outside: for fresh processes the larger of GNU "
              "`time`'s `%M` (largest single process) and the sampled sum over the process "
              "tree; for the worker tools the worker's `VmHWM`, read from `/proc` by the "
              "harness.", "", detail_table(run)]
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


# ---------------------------------------------------------------------------- issue 11/12 views


def _spread(v: dict[str, Any]) -> str:
    if v["n"] < 2:
        return _fmt_s(v["median"])
    return f"{_fmt_s(v['median'])} ({_fmt_s(v['min'])}-{_fmt_s(v['max'])})"


def _cpu(v: dict[str, Any]) -> str:
    if v.get("user") is None:
        return f"{v['cpu']:.2f}"
    return f"{v['user']:.2f} + {v['sys']:.2f}"


def detail_table(run: dict[str, Any]) -> str:
    """Every (backend, corpus, scenario, tool): wall median (min-max), user + sys, peak RSS."""
    summ = summarize(run["records"])
    lines = ["| backend · corpus | scenario | tool | wall s median (min-max) | n | "
             "CPU s user + sys | peak RSS MB (median) |", "|---|---|---|---|---|---|---|"]
    for (b, c, s, t), v in sorted(summ.items(), key=lambda kv: (
            kv[0][0], kv[0][1], _scen_key(kv[0][2]), _tool_key(kv[0][3]))):
        lines.append(f"| {b} · {c} | {s} | {t} | {_spread(v)} | {v['n']} | {_cpu(v)} | "
                     f"{v['rss']:.0f} ({v['rss_median']:.0f}) |")
    return "\n".join(lines) + "\n"


def corpus_files(run: dict[str, Any]) -> dict[str, int]:
    """Corpus name (as in the records) -> file count."""
    return {v["name"]: v["files"] for v in (run.get("corpora") or {}).values()}


def scale_series(run: dict[str, Any], backend: str = "file"
                 ) -> dict[tuple[str, str], list[tuple[int, dict[str, Any]]]]:
    """(scenario, tool) -> [(files, summary)] over the generated corpora of a file-count sweep."""
    summ = summarize(run["records"])
    files = corpus_files(run)
    out: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for (b, c, s, t), v in summ.items():
        if b == backend and c in files and c.startswith("gen") and c[3:4].isdigit():
            out[(s, t)].append((files[c], v))
    for k in out:
        out[k].sort(key=lambda x: x[0])
    return out


SCALE_SCENARIOS = ["first-push", "noop-push", "pull-cold", "pull-warm"]


def scale_table(run: dict[str, Any], backend: str = "file") -> str:
    """Time and peak RSS against file count, one row per scenario and tool."""
    ser = scale_series(run, backend)
    if not ser:
        return ""
    counts = sorted({n for pts in ser.values() for n, _v in pts})
    head = ["scenario", "tool", *[f"{n:,} files: wall s (min-max) · user+sys · RSS MB"
                                  for n in counts]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (s, t) in sorted(ser, key=lambda k: (_scen_key(k[0]), _tool_key(k[1]))):
        pts = dict(ser[(s, t)])
        cells = [s, t]
        for n in counts:
            v = pts.get(n)
            cells.append(f"{_spread(v)} · {_cpu(v)} · {v['rss']:.0f}" if v else "skipped")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scale_plot(run: dict[str, Any], outdir: Path, stem: str, backend: str = "file"
               ) -> Path | None:
    """Wall time and peak RSS against file count (log-log), per scenario, per tool."""
    ser = scale_series(run, backend)
    if not ser:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s for s in SCALE_SCENARIOS if any(k[0] == s for k in ser)]
    fig, axes = plt.subplots(2, len(scen), figsize=(4.2 * len(scen), 7.5), squeeze=False)
    for j, s in enumerate(scen):
        tools = sorted({t for (ss, t) in ser if ss == s}, key=_tool_key)
        for t in tools:
            pts = ser[(s, t)]
            xs = [n for n, _v in pts]
            style = "--" if t in FLOOR_TOOLS else "-"
            axes[0][j].errorbar(xs, [v["median"] for _n, v in pts],
                                yerr=[[v["median"] - v["min"] for _n, v in pts],
                                      [v["max"] - v["median"] for _n, v in pts]],
                                fmt="o" + style, ms=4, capsize=2, label=t, color=COLORS.get(t))
            if t not in FLOOR_TOOLS or t == "cp -r":
                axes[1][j].plot(xs, [v["rss"] for _n, v in pts], "s" + style, ms=4, label=t,
                                color=COLORS.get(t))
        for i, (ylabel, title) in enumerate((("wall seconds", "time"),
                                             ("peak RSS MB (max of reps)", "memory"))):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("files")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{s}: {title}", fontsize=10)
            ax.grid(which="both", alpha=0.3)
        axes[1][j].axhline(100, color="#d95f02", lw=0.8, ls=":")
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            seen.setdefault(lab, h)
    names = sorted(seen, key=_tool_key)
    fig.legend([seen[n] for n in names], names, loc="upper center", ncol=len(names),
               fontsize=9, frameon=False)
    fig.suptitle(f"file-count sweep on {backend} (median, bars min-max; dotted: 100 MB "
                 "target)", y=0.94, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    p = outdir / (f"{stem}-scale.png" if backend == "file" else f"{stem}-scale-{backend}.png")
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    walls = sorted(r["wall"] for r in rows if r.get("ok", True))
    if not walls:
        return {}
    ok = [r for r in rows if r.get("ok", True)]
    return {"median": statistics.median(walls), "min": walls[0], "max": walls[-1],
            "n": len(walls), "user": statistics.median(r["user"] for r in ok),
            "sys": statistics.median(r["sys"] for r in ok), "rss": max(r["rss_mb"] for r in ok),
            "rss_median": statistics.median(r["rss_mb"] for r in ok), "cpu": 0.0}


def startup_table(run: dict[str, Any]) -> str:
    """Issue 12's start-up rows: fresh processes, the floors, and the import time."""
    st = run.get("startup") or {}
    if not st.get("rows"):
        return ""
    rows = {k: _median_row(v) for k, v in st["rows"].items()}
    walk = rows.get("py-walk") or {}
    find = rows.get("find") or {}
    lines = [f"Fresh processes on s3, tree `{st['corpus']}` ({st['files']:,} files, "
             f"{st['mb']} MB), {st['reps']} interleaved repetitions. The floor is interpreter "
             "start + a bare stat walk of the tree (`py-walk`); `find` is the same walk "
             "without an interpreter.", "",
             "| command | wall s median (min-max) | CPU s user + sys | peak RSS MB | "
             "÷ py-walk floor | ÷ find |", "|---|---|---|---|---|---|"]
    for name, v in rows.items():
        if not v:
            lines.append(f"| {name} | failed | | | | |")
            continue
        # Ratios to the floor only where a floor makes sense: commands that do no real work.
        vs = not name.startswith(("first-push", "pull-cold"))
        lines.append(f"| {name} | {_spread(v)} | {_cpu(v)} | {v['rss']:.0f} | "
                     + (f"{v['median'] / walk['median']:.2f}x" if walk and vs else "") + " | "
                     + (f"{v['median'] / find['median']:.2f}x" if find and vs else "") + " |")
    imp = st.get("imports") or {}
    if imp:
        lines += ["", "| engine | imports for a no-op push | for a no-op pull | cloud/store "
                      "packages loaded (push; pull) |", "|---|---|---|---|"]
        for name, v in imp.items():
            if "push_import_ms" not in v:
                continue
            lines.append(f"| {name} | {v['push_import_ms']:.0f} ms | {v['pull_import_ms']:.0f} ms"
                         f" | {', '.join(v['push_sdk']) or '-'}; {', '.join(v['pull_sdk']) or '-'}"
                         " |")
        base = imp.get("python -c pass", {}).get("import_ms")
        if base is not None:
            lines.append("")
            lines.append(f"Import times are `python -X importtime` totals of the command's "
                         f"top-level imports minus those of `python -c pass` ({base:.0f} ms).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- README tables

README_MARKERS = ("<!-- BENCH-TABLE:START -->", "<!-- BENCH-TABLE:END -->")
BENCH_README_MARKERS = {"targets": ("<!-- TARGETS:START -->", "<!-- TARGETS:END -->"),
                        "latest": ("<!-- LATEST-RESULTS -->", "<!-- LATEST-RESULTS:END -->")}


def run_label(run: dict[str, Any]) -> str:
    m = run["meta"]
    return (f"run `{m['run_id']}` ({m['mode']}, engine `{m.get('git') or '?'}`, "
            f"{m['seconds']:.0f} s, reps {m['reps']})")


def _replace_between(text: str, markers: tuple[str, str], body: str, path: Path) -> str:
    start, end = markers
    # The markers stand on lines of their own (prose may mention them in backquotes).
    i = text.find("\n" + start + "\n") + 1 if ("\n" + start + "\n") in text else -1
    j = text.find("\n" + end + "\n", i) + 1 if i > 0 and ("\n" + end + "\n") in text else -1
    if i < 0 or j < i:
        raise SystemExit(f"{path}: markers {start} ... {end} not found")
    return text[:i + len(start)] + "\n" + body.rstrip("\n") + "\n" + text[j:]


def _all_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target from the run that measured it (the scale run for the 100k rows)."""
    out: list[dict[str, Any]] = []
    for key in dict.fromkeys((t.get("issue", ""), t["target"]) for r in runs
                             for t in r.get("targets", [])):
        measured = [(r, t) for r in runs for t in r.get("targets", [])
                    if (t.get("issue", ""), t["target"]) == key and t.get("met") is not None]
        if not measured:
            out.append(next(t for r in runs for t in r.get("targets", [])
                            if (t.get("issue", ""), t["target"]) == key))
            continue
        for r, t in measured:
            out.append({**t, "corpus": f"{t.get('corpus', '')} [{r['meta']['mode']}]"})
    return out


def readme_block(runs: list[dict[str, Any]], rel: str) -> str:
    """The top-level README's benchmark section body, from one run per preset."""
    lines = ["Measured side by side by the suite in [benchmarks/](benchmarks/README.md): every "
             "tool on the same corpus and server, in turns (the order rotates), one fresh "
             "process per command as users run it, medians of the repetitions. "
             "Regenerate this section with `python -m benchmarks --readme`. From "
             + "; ".join(run_label(r) for r in runs) + ", on a shared 2-core machine.", "",
             "| issue | target | threshold | backend · corpus [run] | measured | met | detail |",
             "|---|---|---|---|---|---|---|"]
    lines += targets_table(_all_targets(runs)).splitlines()[2:]
    for r in runs:
        summ = summarize(r["records"])
        pairs = {(b, c) for (b, c, _s, _t) in summ}
        if r["meta"]["mode"] == "scale":  # the biggest tree; the others are in the sweep table
            files = corpus_files(r)
            big = max((p for p in pairs if p[1] in files), key=lambda p: files[p[1]],
                      default=None)
            keep = {big} if big else set()
        else:
            keep = {p for p in pairs if p[0] in ("s3", "s3-latency")} or pairs
        if keep:
            lines += ["", f"Ratios = peer's time ÷ snapsync's, {run_label(r)}:",
                      markdown(r, keep, heading="####").split("\n", 3)[-1]]
        st = startup_table(r)
        if st:
            lines += ["", "#### Start-up (issue 12)", "", st]
        for b in ("file", "s3") if r["meta"]["mode"] == "scale" else ():
            sc = scale_table(r, b)
            if sc:
                lines += ["", f"#### Against file count ({b})", "", sc]
    for r in runs:
        stem = "latest" if r["meta"]["mode"] == "quick" else f"latest-{r['meta']['mode']}"
        for suffix, alt in (("scale", "time and peak RSS against file count"),
                            ("speedup", "speed-up per scenario")):
            if (Path(rel) / f"{stem}-{suffix}.png").exists():
                lines += ["", f"![{alt}](benchmarks/results/{stem}-{suffix}.png)"]
    return "\n".join(lines) + "\n"


def rewrite_readmes(paths: list[Path], results: Path) -> list[Path]:
    """Rewrite the marked sections of README.md and benchmarks/README.md from result JSONs."""
    import json

    from . import BENCH_DIR, REPO_ROOT

    if not paths:
        paths = [p for p in (results / "latest.json", results / "latest-scale.json")
                 if p.exists()]
    if not paths:
        raise SystemExit(f"no results in {results}: run `python -m benchmarks` first")
    runs = [json.loads(p.read_text()) for p in paths]
    from .targets import evaluate

    for r in runs:  # recomputed, so a README always shows the targets of this code
        r["targets"] = evaluate(r)
    top = REPO_ROOT / "README.md"
    text = _replace_between(top.read_text(), README_MARKERS, readme_block(runs, str(results)),
                            top)
    top.write_text(text)
    bench = BENCH_DIR / "README.md"
    text = bench.read_text()
    text = _replace_between(text, BENCH_README_MARKERS["targets"],
                            targets_table(_all_targets(runs)), bench)
    body = []
    for r in runs:
        stem = "latest" if r["meta"]["mode"] == "quick" else f"latest-{r['meta']['mode']}"
        label = run_label(r)
        body += [f"### {label[:1].upper()}{label[1:]}", "",
                 f"Machine: {r['meta']['machine']}. Versions: "
                 + ", ".join(f"{k} {v}" for k, v in r["meta"].get("versions", {}).items())
                 + f". JSON with every repetition: [`results/{stem}.json`](results/{stem}.json)."
                 , ""]
        for suffix in ("scale", "scale-s3", "speedup", "time", "requests", "sweeps"):
            if (results / f"{stem}-{suffix}.png").exists():
                body += [f"![{suffix}](results/{stem}-{suffix}.png)", ""]
        # Demote the report's headings so they sit under this section.
        body += [("##" + ln if ln.startswith("#") else ln) for ln in
                 full_markdown(r).splitlines()]
        body.append("")
    text = _replace_between(text, BENCH_README_MARKERS["latest"], "\n".join(body), bench)
    bench.write_text(text)
    return [top, bench]
