"""Load: 20-30 sessions at once against ONE ``streamlit run app.py`` (a live demo shared with a room),
and (``--compare``) one process against several behind the load balancer of ``deploy/``.

    python benchmarks/bench_load.py                  # 20 sessions
    python benchmarks/bench_load.py --sessions 20 30  # one fresh server per count
    python benchmarks/bench_load.py --think 0 --ramp 0  # everyone clicks at the same instant
    python benchmarks/bench_load.py --compare         # 30 sessions: 1 process vs 2 behind HAProxy

``--compare`` runs, in one go and in alternating order over ``--rounds`` rounds, the same
sessions against: one ``streamlit run`` (direct, as below), ``deploy/run.sh 1`` (one process
behind HAProxy: the balancer's own cost) and ``deploy/run.sh P`` for each P of ``--processes``
(default 2). Each configuration is started fresh, warmed with one session per app process
(pinned by the balancer's cookie), then loaded; the sessions default to ``--think 0 --ramp 0``
(everyone at the same instant, each step right after the last one) so the figure is what the
server side can finish, not what the scenario asks for. Reported: page updates (script runs)
finished per second, p50/p95 per step and over all steps, errors, how many sessions each
process got, the CPU used by the app processes + HAProxy, by this client and by everything
else on the machine (noise), and from the per-process rate: the processes and cores a room
of 300 needs. Results in ``benchmarks/out/load_balanced.json``.

For each session count: starts ``streamlit run app.py`` as tests/browser/conftest.py does (free
port, empty KERAS_HOME, CNN_VIZ_OFFLINE=1: the bundled offline model), waits for
``/_stcore/health``, warms it with ONE session (first run: model load and the default image's
forward pass), then releases N sessions together. Each session (``benchmarks/_load_client.py``:
Streamlit's websocket protocol, no browser, so the 2 cores go to the server) does:

  load     first run of a new session (after fetching index.html and its scripts, as a browser)
  cmap     the Colormap selectbox -> another colormap (display only: cached activations)
  image    the Sample image selectbox -> another sample (a forward pass for the first session
           to pick that image; the 12 other samples are spread over the sessions, so with 20+
           sessions some share a cached result)
  channel  the Channel number input -> 1..7 (display only)

each step once the previous one has finished plus a random think time in [0, --think] s (the
sessions open the page over [0, --ramp] s). The time of a step is from sending the rerun
(``BackMsg.rerun_script``) to receiving ``script_finished``; images (/media) are fetched after
it, as a browser does, and are not in that time.

Errors (target 0): exception elements, error alerts, a run not finished successfully, a
timeout, a dropped websocket, a media fetch that fails, a page that shows another state than
the session's own (caption's image; colormap and channel of the detail heatmap).
Peak memory: VmRSS of the server and of its child processes, polled every 0.1 s from its
start (model load included), and the server's VmHWM at the end. The server log is scanned
for tracebacks, errors and warnings. The server is always killed (process group, by its id),
also on failure or Ctrl-C. The client runs on the same machine: its CPU time is reported next
to the server's, and so is the CPU used meanwhile by every other process (noise).
"""

from __future__ import annotations

import argparse
import math
import resource
import signal
import statistics
import sys
import time

import _common as C
import _load_client as L


def fmt_s(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f} s"


def start_target(kind: str, processes: int, tag: str):
    """``kind`` "direct": one ``streamlit run`` (L.ServerProcess); "balancer": ``deploy/run.sh
    processes`` (L.Deployment). Both with the same app environment."""
    env = {"CNN_VIZ_MODEL_UPLOAD": "off"} if kind == "balancer" else None
    if kind == "direct":
        return L.ServerProcess(C.OUT / f"load_server_{tag}.log", extra_env=env)
    return L.Deployment(processes, C.OUT / f"deploy_{tag}", extra_env=env, restart_delay=3600)


def app_pids(target) -> list[int]:
    """The processes whose CPU is the server side's: the app process(es) and HAProxy."""
    if isinstance(target, L.Deployment):
        return [target.app_pid(n) for n in target.names] + [target.haproxy_pid()]
    return [target.pid]


def app_logs(target) -> list:
    if isinstance(target, L.Deployment):
        return [target.app_log(n) for n in target.names]
    return [target.log_path]


def one_config(n: int, args, kind: str = "direct", processes: int = 1, tag: str = "") -> dict:
    """``n`` sessions against a fresh target (see :func:`start_target`), warmed first."""
    target = start_target(kind, processes, tag or str(n))
    sampler = None
    try:
        started = target.wait_healthy()
        sampler = L.MemorySampler(target.pid, interval=0.1)  # run.sh's tree: app processes + HAProxy
        sampler.start()
        idle_rss = sum(sampler.sample()) / 1024

        # Warm-up: one session's first run per app process (TensorFlow graph, bundled model,
        # default image); behind the balancer each is pinned to its process by the cookie.
        pins = [{L.STICKY_COOKIE: name} for name in target.names] if kind == "balancer" else [{}]

        async def warm():
            out = []
            for cookies in pins:
                s = L.Session(target.url, name="warm", cookies=cookies)
                try:
                    out.append(await s.run("load", fetch_page=False))
                finally:
                    await s.close()
            return out
        t = time.perf_counter()
        warm_runs = L.run_async(warm)
        warm_s = time.perf_counter() - t
        bad = [w.errors or "unfinished" for w in warm_runs if not w.finished or w.errors]
        if bad:
            raise RuntimeError(f"warm-up run failed: {bad}\n{target.log_tail()}")
        warm_rss = sum(sampler.sample()) / 1024
        logs = app_logs(target)
        log_offsets = [p.stat().st_size for p in logs]

        pids = app_pids(target)
        haproxy_cpu0 = L.cpu_seconds(pids[-1]) if kind == "balancer" else 0.0
        cpu0, ru0 = sum(L.cpu_seconds(p) for p in pids), resource.getrusage(resource.RUSAGE_SELF)
        busy0 = L.machine_busy_seconds()
        sessions, wall = L.run_async(L.run_load, target.url, n, think=args.think, ramp=args.ramp,
                                     seed=args.seed, fetch_page=not args.no_page)
        cpu1, ru1 = sum(L.cpu_seconds(p) for p in pids), resource.getrusage(resource.RUSAGE_SELF)
        busy1 = L.machine_busy_seconds()
        haproxy_cpu = (L.cpu_seconds(pids[-1]) - haproxy_cpu0) if kind == "balancer" else 0.0
        mem = sampler.stop()
        sampler = None
        if isinstance(target, L.Deployment):
            alive = target.proc.poll() is None and all(v == "UP" for v in target.states().values())
        else:
            alive = target.proc.poll() is None
    finally:
        if sampler is not None:
            sampler.stop()
        target.stop()
    problems, problems_during = [], []
    for path, offset in zip(logs, log_offsets):
        problems += L.log_problems(path)
        with open(path, "rb") as f:
            f.seek(offset)
            problems_during += L.log_problems_text(f.read().decode("utf-8", "replace"))
    summary = L.summarise(sessions, wall)
    client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {
        **summary,
        "kind": kind, "processes": processes,
        "server_start_s": started, "warmup_s": warm_s, "warmup_run_s": max(w.seconds for w in warm_runs),
        "idle_rss_mb": idle_rss, "after_warmup_rss_mb": warm_rss, **mem,
        "server_cpu_s": cpu1 - cpu0, "server_cores_busy": (cpu1 - cpu0) / wall,
        "haproxy_cpu_s": haproxy_cpu,
        "client_cpu_s": client_cpu, "server_alive_at_end": alive,
        # CPU used meanwhile by everything else on the machine (other benchmarks, browsers...): noise.
        "other_cpu_s": (busy1 - busy0) - (cpu1 - cpu0) - client_cpu,
        "other_cores_busy": ((busy1 - busy0) - (cpu1 - cpu0) - client_cpu) / wall,
        "log_problems": problems, "log_problems_during_load": problems_during,
        "log": ", ".join(str(p.relative_to(C.ROOT)) for p in logs),
    }


def one_count(n: int, args) -> dict:
    return one_config(n, args, "direct", 1, str(n))


def table(results: dict[int, dict]) -> str:
    counts = list(results)
    head = "| step | " + " | ".join(f"{n} sessions: p50 / p95 / max" for n in counts) + " |"
    lines = [head, "|---|" + "---|" * len(counts)]
    for step in L.STEPS:
        cells = []
        for n in counts:
            s = results[n]["steps"][step]
            err = f", **{s['errors']} errors**" if s["errors"] else ""
            unfinished = f", {s['runs'] - s['finished']} unfinished" if s["runs"] != s["finished"] else ""
            cells.append(f"{fmt_s(s['p50_s'])} / {fmt_s(s['p95_s'])} / {fmt_s(s['max_s'])}{err}{unfinished}")
        lines.append(f"| {L.STEP_TITLES[step]} | " + " | ".join(cells) + " |")
    rows = [
        ("errors (target 0)", lambda r: f"**{r['errors']}** in {r['runs']} runs ({r['finished']} finished)"),
        ("reruns finished per second", lambda r: f"{r['reruns_per_s']:.2f} (all done in {r['wall_s']:.0f} s)"),
        ("peak server RSS (+ children)", lambda r: f"{r['peak_rss_mb']:.0f} MB (VmHWM {r['vm_hwm_mb']:.0f} MB)"),
        ("server RSS idle / after warm-up", lambda r: f"{r['idle_rss_mb']:.0f} / {r['after_warmup_rss_mb']:.0f} MB"),
        ("server CPU during the load", lambda r: f"{r['server_cpu_s']:.0f} s = {r['server_cores_busy']:.2f} cores "
                                                 f"(client {r['client_cpu_s']:.0f} s)"),
        ("other processes' CPU meanwhile (noise)", lambda r: f"{max(0.0, r['other_cores_busy']):.2f} cores"),
        ("KB received per run (cmap / image)",
         lambda r: f"{r['steps']['cmap']['kb_per_run']:.0f} / {r['steps']['image']['kb_per_run']:.0f}"),
        ("page fetch (index.html + scripts), p50", lambda r: fmt_s(r["assets_p50_s"])),
        ("server log: problem lines during the load", lambda r: str(len(r["log_problems_during_load"]))),
    ]
    for label, f in rows:
        lines.append(f"| {label} | " + " | ".join(f(results[n]) for n in counts) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- --compare

ROOM = 300


def config_label(kind: str, processes: int) -> str:
    if kind == "direct":
        return "1 process (direct)"
    return f"{processes} process{'es' if processes != 1 else ''} + HAProxy"


def sizing(rate: float, rss_mb: float, room: int = ROOM) -> dict:
    """Processes (= cores) for ``room`` viewers from one process's update rate.

    burst: everyone changes something at the same instant (the presenter says "now pick
    another image"): cleared in room / (N * rate) s; N for that to be within T.
    steady: each viewer changes something every 20 s on average (room / 20 updates/s) with
    every process at most 70% busy, so queues stay short."""
    out = {"rate_per_process": rate, "room": room, "rss_per_process_mb": rss_mb}
    for t in (5, 10):
        out[f"burst_{t}s"] = math.ceil(room / (rate * t))
    out["steady_20s"] = math.ceil(room / 20 / (0.7 * rate))
    return out


def compare(args) -> int:
    configs = [("direct", 1), ("balancer", 1)] + [("balancer", p) for p in args.processes if p != 1]
    labels = [config_label(*c) for c in configs]
    C.header(f"Load: {', '.join(map(str, args.sessions))} sessions, {' vs '.join(labels)} "
             f"(think [0, {args.think}] s, ramp [0, {args.ramp}] s, {args.rounds} rounds, order alternating)")
    runs: dict[int, dict[str, list[dict]]] = {n: {lab: [] for lab in labels} for n in args.sessions}
    for n in args.sessions:
        for rnd in range(args.rounds):
            order = list(zip(configs, labels))
            if rnd % 2:
                order.reverse()
            for (kind, procs), label in order:
                print(f"\n--- {n} sessions, round {rnd + 1}: {label}: starting, warming ...", flush=True)
                r = one_config(n, args, kind, procs, tag=f"{n}_{kind}{procs}_r{rnd + 1}")
                runs[n][label].append(r)
                print(f"healthy after {r['server_start_s']:.1f} s; {n} sessions done in {r['wall_s']:.1f} s: "
                      f"{r['reruns_per_s']:.2f} updates/s, p50 {fmt_s(r['all_p50_s'])}, p95 {fmt_s(r['all_p95_s'])}, "
                      f"errors {r['errors']}, sessions per process {r['sessions_per_process']}, "
                      f"server {r['server_cores_busy']:.2f} / client {r['client_cpu_s'] / r['wall_s']:.2f} / "
                      f"other {max(0.0, r['other_cores_busy']):.2f} cores busy", flush=True)
                for e in r["error_messages"][:20]:
                    print(f"  ERROR {e}")
                for line in r["log_problems_during_load"][:10]:
                    print(f"  server log: {line}")

    out, ok_all, md_all = {}, True, []
    for n in args.sessions:
        res = runs[n]
        base = res[labels[0]]

        def med(label: str, key: str) -> float:
            return statistics.median(r[key] for r in res[label])

        def pooled(label: str, pct: float, step: str = "") -> float:
            """A percentile over the runs of every round (of one step, or of all)."""
            times = [t for r in res[label] for t in (r["step_times_s"][step] if step else r["all_times_s"])]
            return L.percentile(times, pct)

        lines = [f"**{n} sessions** | " + " | ".join(labels), "|---|" + "---|" * len(labels)]

        def row(title: str, f) -> None:
            lines.append(f"| {title} | " + " | ".join(f(lab) for lab in labels) + " |")

        row("page updates finished per second (each round; median)",
            lambda lab: " / ".join(f"{r['reruns_per_s']:.2f}" for r in res[lab]) + f"; **{med(lab, 'reruns_per_s'):.2f}**")
        row("ratio to 1 process (direct), same round",
            lambda lab: " / ".join(f"{r['reruns_per_s'] / b['reruns_per_s']:.2f}" for r, b in zip(res[lab], base))
            + f"; **{statistics.median(r['reruns_per_s'] / b['reruns_per_s'] for r, b in zip(res[lab], base)):.2f}**")
        row("updates per CPU-second of the app processes + HAProxy (rate / cores busy)",
            lambda lab: f"{statistics.median(r['reruns_per_s'] / r['server_cores_busy'] for r in res[lab]):.2f}")
        row("all steps: p50 / p95", lambda lab: f"{fmt_s(pooled(lab, 50))} / {fmt_s(pooled(lab, 95))}")
        for step in L.STEPS:
            row(f"{L.STEP_TITLES[step]}: p50 / p95",
                lambda lab, step=step: f"{fmt_s(pooled(lab, 50, step))} / {fmt_s(pooled(lab, 95, step))}")
        row("errors (target 0)", lambda lab: f"**{sum(r['errors'] for r in res[lab])}** in "
                                              f"{sum(r['runs'] for r in res[lab])} runs")
        row("sessions per process", lambda lab: " / ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(r["sessions_per_process"].items())) for r in res[lab]))
        row("CPU busy: app processes + HAProxy / this client / everything else (cores)",
            lambda lab: f"{med(lab, 'server_cores_busy'):.2f} / "
                        f"{statistics.median(r['client_cpu_s'] / r['wall_s'] for r in res[lab]):.2f} / "
                        f"{max(0.0, med(lab, 'other_cores_busy')):.2f}")
        row("of which HAProxy (cores)", lambda lab: f"{statistics.median(r['haproxy_cpu_s'] / r['wall_s'] for r in res[lab]):.3f}")
        row("peak RSS, all app processes", lambda lab: f"{med(lab, 'peak_rss_mb'):.0f} MB")
        md = "\n".join(lines)
        md_all.append(md)
        print("\n" + md)

        multi = [lab for (kind, p), lab in zip(configs, labels) if kind == "balancer" and p > 1]
        ratios = {lab: statistics.median(r["reruns_per_s"] / b["reruns_per_s"] for r, b in zip(res[lab], base))
                  for lab in multi}
        errors = sum(r["errors"] for lab in labels for r in res[lab])
        complete = all(r["finished"] == r["runs"] == 4 * n and r["server_alive_at_end"]
                       for lab in labels for r in res[lab])
        met = {lab: ratios[lab] >= 0.8 * int(lab.split()[0]) for lab in multi}
        rate = med(labels[0], "reruns_per_s")
        per_core = statistics.median(r["reruns_per_s"] / r["server_cores_busy"] for r in base)
        rss = med(labels[0], "after_warmup_rss_mb")
        size = sizing(rate, rss)
        size["per_core_rate"] = per_core
        print(f"\nzero errors, every step of every session finished: {C.verdict(errors == 0 and complete)}")
        for lab in multi:
            print(f"{lab}: {ratios[lab]:.2f}x the updates/s of 1 process (target >= "
                  f"{0.8 * int(lab.split()[0]):.1f}x): {C.verdict(met[lab])}")
        print(f"\nA room of {ROOM}, from {rate:.2f} updates/s per process ({rss:.0f} MB each after warm-up):")
        print(f"  everyone clicks at once: N processes clear it in {ROOM}/(N x {rate:.1f}) s -> "
              f"N = {size['burst_5s']} for 5 s, {size['burst_10s']} for 10 s")
        print(f"  steady (a change per viewer every 20 s, processes <= 70% busy): N = {size['steady_20s']}")
        print(f"  one core per process (plus ~1 for HAProxy and the system), ~{rss / 1024:.1f} GB RAM per process")
        print(f"  (the process had {med(labels[0], 'server_cores_busy'):.2f} cores of CPU time: "
              f"{per_core:.1f} updates per CPU-second; the rate above is what it reached on this machine)")
        rooms = {room: sizing(rate, rss, room) for room in (30, 100, ROOM)}
        size["rooms"] = rooms
        room_md = "\n".join(
            ["| room | everyone at once, all answered within 10 s | within 5 s | steady: one change per person every 20 s |",
             "|---|---|---|---|"]
            + [f"| {room} | {z['burst_10s']} | {z['burst_5s']} | {z['steady_20s']} |" for room, z in rooms.items()])
        print(f"\nprocesses needed at {rate:.1f} updates/s per process:\n{room_md}")
        ok_all = ok_all and errors == 0 and complete and all(met.values())
        out[str(n)] = {"runs": {lab: res[lab] for lab in labels}, "ratios": ratios, "target_met": met,
                       "errors": errors, "complete": complete, "sizing": size, "table": md}

    C.save("load_balanced", {"args": vars(args), "results": out, "table": "\n\n".join(md_all),
                             "target_met": ok_all})
    return 0 if ok_all else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=None,
                    help="session counts (a fresh server each; default 20, with --compare 30)")
    ap.add_argument("--think", type=float, default=None,
                    help="random think time before each change, in [0, THINK] s (default 2, with --compare 0)")
    ap.add_argument("--ramp", type=float, default=None,
                    help="sessions open the page over [0, RAMP] s (default 2, with --compare 0)")
    ap.add_argument("--compare", action="store_true",
                    help="1 process (direct) vs deploy/run.sh 1 and P processes behind HAProxy")
    ap.add_argument("--processes", type=int, nargs="+", default=[2], help="with --compare: P processes")
    ap.add_argument("--rounds", type=int, default=2, help="with --compare: rounds, in alternating order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-page", action="store_true", help="don't fetch index.html and its scripts on load")
    args = ap.parse_args()
    args.sessions = args.sessions or ([30] if args.compare else [20])
    args.think = (0.0 if args.compare else 2.0) if args.think is None else args.think
    args.ramp = (0.0 if args.compare else 2.0) if args.ramp is None else args.ramp
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped by the `finally` in one_config.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.compare:
        return compare(args)

    C.header(f"Load: {', '.join(map(str, args.sessions))} sessions on one `streamlit run app.py` "
             f"(think [0, {args.think}] s, ramp [0, {args.ramp}] s)")
    results: dict[int, dict] = {}
    for n in args.sessions:
        print(f"\n--- {n} sessions: starting a server, warming it with one session ...", flush=True)
        r = results[n] = one_count(n, args)
        print(f"server healthy after {r['server_start_s']:.1f} s; warm-up run {r['warmup_run_s']:.1f} s; "
              f"{n} sessions done in {r['wall_s']:.1f} s; errors: {r['errors']}")
        for e in r["error_messages"][:20]:
            print(f"  ERROR {e}")
        if r["log_problems_during_load"]:
            print(f"  server log ({r['log']}), problem lines during the load:")
            for line in r["log_problems_during_load"][:20]:
                print(f"    {line}")
        if not r["server_alive_at_end"]:
            print("  THE SERVER DIED during the load")

    print()
    md = table(results)
    print(md)
    ok = all(r["errors"] == 0 and r["finished"] == r["runs"] == 4 * n and r["server_alive_at_end"]
             for n, r in results.items())
    print(f"\nzero errors, every step of every session finished: {C.verdict(ok)}")
    C.save("load", {"args": vars(args), "results": {str(n): r for n, r in results.items()}, "table": md,
                    "target_zero_errors_met": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
