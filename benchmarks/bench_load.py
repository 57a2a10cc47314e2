"""Load: 20-30 sessions at once against ONE ``streamlit run app.py`` (a live demo shared with a room).

    /work/venv/bin/python benchmarks/bench_load.py                  # 20 sessions
    /work/venv/bin/python benchmarks/bench_load.py --sessions 20 30  # one fresh server per count
    /work/venv/bin/python benchmarks/bench_load.py --think 0 --ramp 0  # everyone clicks at the same instant

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
import resource
import signal
import sys
import time

import _common as C
import _load_client as L


def fmt_s(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f} s"


def one_count(n: int, args) -> dict:
    log_path = C.OUT / f"load_server_{n}.log"
    server = L.ServerProcess(log_path)
    sampler = None
    try:
        started = server.wait_healthy()
        sampler = L.MemorySampler(server.pid, interval=0.1)
        sampler.start()
        idle_rss = sum(sampler.sample()) / 1024

        # Warm-up: one session's first run (TensorFlow graph, bundled model, default image).
        async def warm():
            s = L.Session(server.url, name="warm")
            try:
                return await s.run("load", fetch_page=False)
            finally:
                await s.close()
        t = time.perf_counter()
        w = L.run_async(warm)
        warm_s = time.perf_counter() - t
        if not w.finished or w.errors:
            raise RuntimeError(f"warm-up run failed: {w.errors}\n{server.log_tail()}")
        warm_rss = sum(sampler.sample()) / 1024
        log_offset = log_path.stat().st_size

        cpu0, ru0 = L.cpu_seconds(server.pid), resource.getrusage(resource.RUSAGE_SELF)
        busy0 = L.machine_busy_seconds()
        sessions, wall = L.run_async(L.run_load, server.url, n, think=args.think, ramp=args.ramp,
                                     seed=args.seed, fetch_page=not args.no_page)
        cpu1, ru1 = L.cpu_seconds(server.pid), resource.getrusage(resource.RUSAGE_SELF)
        busy1 = L.machine_busy_seconds()
        mem = sampler.stop()
        sampler = None
        alive = server.proc.poll() is None
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()
    problems = L.log_problems(log_path)
    with open(log_path, "rb") as f:
        f.seek(log_offset)
        problems_during = L.log_problems_text(f.read().decode("utf-8", "replace"))
    summary = L.summarise(sessions, wall)
    client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {
        **summary,
        "server_start_s": started, "warmup_s": warm_s, "warmup_run_s": w.seconds,
        "idle_rss_mb": idle_rss, "after_warmup_rss_mb": warm_rss, **mem,
        "server_cpu_s": cpu1 - cpu0, "server_cores_busy": (cpu1 - cpu0) / wall,
        "client_cpu_s": client_cpu, "server_alive_at_end": alive,
        # CPU used meanwhile by everything else on the machine (other benchmarks, browsers...): noise.
        "other_cpu_s": (busy1 - busy0) - (cpu1 - cpu0) - client_cpu,
        "other_cores_busy": ((busy1 - busy0) - (cpu1 - cpu0) - client_cpu) / wall,
        "log_problems": problems, "log_problems_during_load": problems_during,
        "log": str(log_path.relative_to(C.ROOT)),
    }


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[20], help="session counts (a fresh server each)")
    ap.add_argument("--think", type=float, default=2.0, help="random think time before each change, in [0, THINK] s")
    ap.add_argument("--ramp", type=float, default=2.0, help="sessions open the page over [0, RAMP] s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-page", action="store_true", help="don't fetch index.html and its scripts on load")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the server is stopped by the `finally` in one_count.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

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
