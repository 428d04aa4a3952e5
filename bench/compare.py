"""`--compare A.json B.json`: per-row speed-up of run B over run A.

Rows are matched on (provider, device, mode, dtype, layers, hidden, batch, seq, proj,
varlen); files from before proj and varlen read as plain shapes.
ratio = A median / B median: above 1, B is faster.
"""

from __future__ import annotations

from pathlib import Path

from bench.report import load_json, shape_key


def _key(r: dict) -> tuple:
    return (r["provider"], r["device"], r["mode"], r["dtype"], *shape_key(r))


def compare(a_path: str | Path, b_path: str | Path) -> tuple[str, list[dict]]:
    """Markdown comparing two result files, and the matched rows as dicts with
    provider, mode, dtype, shape, a_ms, b_ms, ratio (None unless both rows are ok)."""
    a, b = load_json(a_path), load_json(b_path)
    a_rows = {_key(r): r for r in a["rows"]}
    b_rows = {_key(r): r for r in b["rows"]}
    ha, hb = a["header"], b["header"]
    lines = [
        f"A: {a_path}: {ha['device']}, git {(ha['git_sha'] or '?')[:12]}, {ha['date']}",
        f"B: {b_path}: {hb['device']}, git {(hb['git_sha'] or '?')[:12]}, {hb['date']}",
    ]
    if ha["device"] != hb["device"]:
        lines.append("warning: the two files come from different devices")
    lines += [
        "",
        "| provider | mode | dtype | shape | A ms | B ms | A/B (>1: B faster) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    matched = []
    for k, ra in a_rows.items():
        rb = b_rows.get(k)
        if rb is None:
            continue
        both = ra["status"] == "ok" and rb["status"] == "ok"
        ratio = ra["median_ms"] / rb["median_ms"] if both else None
        shape = f"{ra['layers']}x{ra['hidden']}:{ra['batch']}:{ra['seq']}"
        shape += (f"p{k[8]}" if k[8] else "") + ("v" if k[9] else "")
        matched.append(
            dict(provider=k[0], mode=k[2], dtype=k[3], shape=shape,
                 a_ms=ra["median_ms"], b_ms=rb["median_ms"], ratio=ratio)
        )  # fmt: skip
        cell = f"{ratio:.3f}" if ratio is not None else f"({ra['status']} / {rb['status']})"
        a_ms = "" if ra["median_ms"] is None else f"{ra['median_ms']:.4g}"
        b_ms = "" if rb["median_ms"] is None else f"{rb['median_ms']:.4g}"
        lines.append(f"| {k[0]} | {k[2]} | {k[3]} | {shape} | {a_ms} | {b_ms} | {cell} |")
    only_a = len(a_rows.keys() - b_rows.keys())
    only_b = len(b_rows.keys() - a_rows.keys())
    lines += ["", f"{len(matched)} rows matched; {only_a} only in A, {only_b} only in B."]
    return "\n".join(lines), matched
