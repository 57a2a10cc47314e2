"""Summarise benchmarks/out/*.json as the README's results table (Markdown).

    python benchmarks/report.py                 # print it
    python benchmarks/report.py --write-readme  # also replace the table in benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import re

import _common as C

START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(name: str) -> dict | None:
    path = C.OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def ms(s) -> str:
    return "n/a" if s is None else f"{s * 1000:.0f} ms"


def verdict(t: dict | None) -> str:
    if not t:
        return "not run"
    if t["met"] is None:
        return "**borderline**"
    return "**met**" if t["met"] else "**MISSED**"


def table() -> str:
    rows: list[tuple[str, str, str, str]] = []  # measure, result, target, verdict
    runs = {}
    machine = None

    ex = load("extraction")
    if ex:
        runs["extraction"] = ex
        machine = machine or ex["machine"]
        m = ex["median_s"]
        rows += [
            ("**extraction** VGG16, 1 image: (a) `forward`, 13 conv layers, cached extractor",
             f"{ms(m['a'])} (first call incl. build {ms(ex['first_call_a_s'])})", "", ""),
            ("(b) bare `m.model(batch)`", ms(m["b"]), "", ""),
            ("(c) tutorial: 13 sub-models + `predict`", ms(m["c"]), "", ""),
            ("a/b", f"{ex['a_over_b']:.2f} (per-round median {ex['a_over_b_rounds']:.2f})", "<= 1.15",
             verdict(ex["targets"]["a_over_b"])),
            ("c/a", f"{ex['c_over_a']:.1f} (per-round median {ex['c_over_a_rounds']:.1f})", ">= 15",
             verdict(ex["targets"]["c_over_a"])),
        ]
        if "e_over_b" in ex:
            rows.append(("e/b: (a) + predictions (same graph as b) vs b", f"{ex['e_over_b']:.2f}", "info", ""))

    cm = load("channel_memory")
    if cm:
        runs["channel_memory"] = cm
        machine = machine or cm["machine"]
        p, t = cm["extra_peak_mb"], cm["time_s"]
        rows += [
            ("**channel memory** block1_conv1, 49 images: `channel_across_images` extra peak RSS",
             f"{p['channel']:.1f} MB, {ms(t['channel'])}", "<= 64 MB",
             verdict(cm["targets"]["channel_extra_peak_mb"])),
            ("whole layer (`forward`, batch 49) extra peak RSS", f"{p['layer']:.0f} MB, {ms(t['layer'])}", "", ""),
            ("layer / channel", f"memory {cm['memory_ratio_layer_over_channel']:.0f}x, time "
                                f"{cm['time_ratio_layer_over_channel']:.2f}x", "", ""),
        ]
        strict = (cm.get("diagnosis") or {}).get("channel_strict_allocator")
        if strict:
            rows.append(("channel path, non-pooling allocator (oneDNN off, malloc mmap)",
                         f"{strict['extra_peak_mb']:.0f} MB", "info", ""))

    pl = load("payload")
    if pl:
        runs["payload"] = pl
        machine = machine or pl["machine"]
        for view, v in pl["views"].items():
            seeds = v.get("seed_totals") or {}
            extra = (f" (max over {len(seeds)} weight seeds; seed 0: {v['total_spec_bytes'] / 1e6:.2f} MB)"
                     if len(seeds) > 1 else "")
            at = v.get("apptest")
            check = f"; AppTest real app: {v['apptest_spec_total_bytes'] / 1e6:.3f} MB" if at else ""
            rows.append((f"**payload** {view} view ({v['image']}): the 4 Plotly specs",
                         f"{v['worst_total_bytes'] / 1e6:.3f} MB{extra}{check}", "<= 1.5 MB",
                         verdict(pl["targets"][f"payload_{view}"])))
            rows.append((f"figure build + serialise, {view}", ms(v["build_and_serialise_median_s"]), "info", ""))

    rr = load("rerun")
    if rr:
        runs["rerun"] = rr
        machine = machine or rr["machine"]
        for view, v in rr["views"].items():
            rows.append((f"**rerun** {view}: colormap change, AppTest `.run()`",
                         f"{ms(v['median_s'])}, {v['forward_calls']} forward passes "
                         f"(control: {v['positive_control_calls']})", "<= 0.2 s, 0 passes",
                         verdict(rr["targets"][f"rerun_{view}"])))
            if "shared_cache_median_s" in v:
                rows.append((f"{view}: with a server's ScriptCache / post-run clear_session+gc / until script_finished",
                             f"{ms(v['shared_cache_median_s'])} / {ms(v['post_run_cleanup_median_s'])} / "
                             f"{ms(v['until_script_finished_s'])}", "info", ""))
            if "gc_freeze_median_s" in v:
                rows.append((f"{view}: what-if `gc.freeze()` after model load (server-like) / its post-run cleanup",
                             f"{ms(v['gc_freeze_median_s'])} / {ms(v['gc_freeze_post_run_cleanup_median_s'])}",
                             "info", ""))

    br = load("browser")
    if br:
        runs["browser"] = br
        machine = machine or br["machine"]
        tg = br["targets"]
        for view, v in br["views"].items():
            s = v["summary"]
            cold = s["cold"]
            if v.get("script", "app.py") != "app.py":
                for name in ("first_visit", "returning"):
                    d = s[name]
                    busy = d.get("busy_between_script_and_paint_ms")
                    rows.append((f"**browser baseline** `{v['script']}` (same 4 chart kinds, no model), "
                                 f"{name.replace('_', ' ')}: nav -> script_finished / painted / painted after script",
                                 f"{ms(d['nav_to_script_finished_s'])} / {ms(d['nav_to_painted_s'])} / "
                                 f"**{ms(d['painted_after_script_s'])}**"
                                 + (f" (main thread busy {busy:.0f} ms of it)" if busy is not None else ""),
                                 "baseline", ""))
                continue
            rows.append((f"**browser** {view}, cold server (first visitor: model build + forward): nav -> "
                         "script_finished / painted", f"{ms(cold['nav_to_script_finished_s'])} / "
                                                      f"{ms(cold['nav_to_painted_s'])}", "", ""))
            for name in ("first_visit", "returning"):
                d = s[name]
                busy = d.get("busy_between_script_and_paint_ms")
                rows.append((f"{view}, {name.replace('_', ' ')} (warm server): nav -> script_finished / all "
                             f"{s['charts']} charts painted / painted after the script ended",
                             f"{ms(d['nav_to_script_finished_s'])} / {ms(d['nav_to_painted_s'])} / "
                             f"**{ms(d['painted_after_script_s'])}**"
                             + (f" (main thread busy {busy:.0f} ms of it)" if busy is not None else "")
                             + f"; ws {d['ws_bytes'] / 1e6:.2f} MB", "<= 0.5 s after script",
                             verdict(tg.get(f"paint_after_script_{view}_{name}"))))
            for key, label in (("change", "colormap -> magma"), ("change_back", "colormap back -> viridis (cached msgs)")):
                d = s.get(key)
                if not d:
                    continue
                rows.append((f"{view}, {label}: click -> script_finished / repainted / repainted after the "
                             "script ended", f"{ms(d['click_to_script_finished_s'])} / {ms(d['click_to_painted_s'])} / "
                                             f"**{ms(d['painted_after_script_s'])}**; ws {d['ws_bytes'] / 1e6:.3f} MB",
                             "<= 0.5 s after script" if key == "change" else "info",
                             verdict(tg.get(f"paint_after_script_{view}_change")) if key == "change" else ""))

    lines = []
    if machine:
        v = machine["versions"]
        dates = sorted(r["machine"]["date"] for r in runs.values())
        when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
        lines.append(f"Run {when} on {machine['nproc']} CPUs ({machine['cpu']}), {machine['mem']} RAM, "
                     f"Linux {machine['kernel']}; Python {v.get('python')}, tensorflow-cpu {v.get('tensorflow')}, "
                     f"keras {v.get('keras')}, streamlit {v.get('streamlit')}, plotly {v.get('plotly')}, "
                     f"numpy {v.get('numpy')}, pillow {v.get('PIL')}; Chromium /usr/bin/chromium.")
        loads = ", ".join(f"{k} {' '.join(map(str, r.get('loadavg_start') or []))}" for k, r in runs.items())
        lines.append(f"Load average (1/5/15 min) when each started: {loads}. The machine is shared: "
                     "absolute times move with it; ratios are measured within one run.")
        lines.append("")
    lines.append("| Measure | Result (medians) | Target | Verdict |")
    lines.append("|---|---|---|---|")
    for measure, result, target, ver in rows:
        lines.append(f"| {measure} | {result} | {target} | {ver} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    text = table()
    print(text)
    if args.write_readme:
        readme = C.ROOT / "benchmarks" / "README.md"
        body = readme.read_text()
        if START not in body or END not in body:
            raise SystemExit(f"{readme} has no {START} ... {END} block")
        body = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: f"{START}\n{text}\n{END}", body,
                      flags=re.S)
        readme.write_text(body)
        print(f"\n[table written into {readme.relative_to(C.ROOT)}]")


if __name__ == "__main__":
    main()
