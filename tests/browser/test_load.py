"""Several sessions at once on one `streamlit run app.py`: no errors, every run finishes, no cross-talk.

A small version of ``benchmarks/bench_load.py`` (which has the timings and the memory): a few
sessions, each speaking Streamlit's websocket protocol (``benchmarks/_load_client.py``, no
browser), released together on the suite's server (the ``server`` fixture of conftest.py), each
doing: first run -> its own colormap -> its own sample image -> its own channel. No timing is
asserted (the machine is noisy); what is asserted:

* zero errors: no exception element, no error alert, every run FINISHED_SUCCESSFULLY, no
  dropped websocket, every /media image served; and no traceback in the server log meanwhile;
* every session reached ``script_finished`` for every step;
* each session sees its own state, never another's: after each change the detail heatmap's
  colorscale is the session's own colormap, the input caption its own image, the detail title
  its own channel, the URL (``page_info_changed``) its own settings; the first-layer grids of
  sessions with different colormaps differ; and each session's final charts are byte for byte
  what a session opened alone on its final URL gets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qs

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _load_client as L  # noqa: E402

pytestmark = pytest.mark.browser

SESSIONS = 4
DETAIL = L.DETAIL_KEY  # the detail heatmap of the bundled model's first conv layer


@pytest.fixture(scope="module")
def load_run(server):
    """Run the sessions once for all the tests here; keep what each saw after each step."""
    seen: dict[tuple[str, str], dict] = {}

    def snapshot(s: L.Session, step: str) -> None:
        charts = {key: s.element(key).plotly_chart.spec for key in ("grid-first", "grid-last", DETAIL)
                  if key in s.keyed}
        seen[(s.name, step)] = {"query": s.query, "caption": s.caption(), "charts": charts}

    log_start = server.log_path.stat().st_size if server.log_path.exists() else 0
    # In a thread of its own: with the browser suite, Playwright's sync API runs an event loop here.
    sessions, wall = L.run_async(L.run_load, server.url, SESSIONS, snapshot=snapshot)
    with open(server.log_path, "rb") as f:
        f.seek(log_start)
        log_text = f.read().decode("utf-8", "replace")
    return {"sessions": sessions, "seen": seen, "summary": L.summarise(sessions, wall), "log": log_text,
            "plans": {f"s{i:02d}": L.plan_for(i, L.other_samples()) for i in range(SESSIONS)}}


def test_no_errors_and_every_step_finished(load_run):
    summary = load_run["summary"]
    assert summary["errors"] == 0, "\n".join(summary["error_messages"])
    for s in load_run["sessions"]:
        assert [r.step for r in s.results] == list(L.STEPS), f"{s.name} stopped early: {s.results}"
        for r in s.results:
            assert r.finished and r.status == L.FINISHED_OK, f"{s.name} {r.step}: {r}"
    assert summary["finished"] == SESSIONS * len(L.STEPS)


def test_server_log_clean_during_load(load_run):
    problems = L.log_problems_text(load_run["log"])
    assert not problems, "server log during the load:\n" + "\n".join(problems[:40])


def test_plans_differ():
    """The check below only means something if the sessions ask for different things."""
    plans = [L.plan_for(i, L.other_samples()) for i in range(SESSIONS)]
    for attr in ("cmap", "image", "channel"):
        values = [getattr(p, attr) for p in plans]
        assert len(set(values)) == SESSIONS, f"{attr}: {values}"
    assert all(p.cmap != "viridis" and p.image != L.DEFAULT_IMAGE and p.channel != L.DEFAULT_CHANNEL for p in plans)


def test_each_session_sees_its_own_state(load_run):
    seen, plans = load_run["seen"], load_run["plans"]
    for name, plan in plans.items():
        first = seen[(name, "load")]
        assert L.same_colorscale(json.loads(first["charts"][DETAIL])["data"][0]["colorscale"], "viridis")
        assert first["caption"].startswith(f"{L.DEFAULT_IMAGE},")

        for step in ("cmap", "image", "channel"):
            snap = seen[(name, step)]
            detail = json.loads(snap["charts"][DETAIL])
            assert L.same_colorscale(detail["data"][0]["colorscale"], plan.cmap), f"{name} after {step}"
            q = {k: v[0] for k, v in parse_qs(snap["query"]).items()}
            assert q.get("cmap") == plan.cmap, f"{name} after {step}: URL {snap['query']}"
            image = plan.image if step in ("image", "channel") else L.DEFAULT_IMAGE
            assert snap["caption"].startswith(f"{image},"), f"{name} after {step}: {snap['caption']!r}"
            assert q.get("image", L.DEFAULT_IMAGE) == image, f"{name} after {step}: URL {snap['query']}"
        title = json.loads(seen[(name, "channel")]["charts"][DETAIL])["layout"]["title"]["text"]
        assert f"channel {plan.channel} " in title, f"{name}: {title!r}"
        assert parse_qs(seen[(name, "channel")]["query"]).get("channel") == [str(plan.channel)]


def test_grids_differ_between_sessions(load_run):
    """Different colormaps (after the colormap step, same image) give different first-layer mosaics."""
    seen, names = load_run["seen"], sorted(load_run["plans"])
    for step in ("cmap", "image"):
        grids = {seen[(n, step)]["charts"]["grid-first"] for n in names}
        assert len(grids) == len(names), f"after {step}, two sessions got the same first-layer grid"


def test_final_charts_match_a_session_alone(load_run, server):
    """Each session's last charts are exactly what one session alone gets for the same URL."""
    seen = load_run["seen"]

    async def alone(query: str) -> dict[str, str]:
        s = L.Session(server.url, name="alone", query=query)
        try:
            res = await s.run("load")
            assert res.finished and not res.errors, res
            return {key: s.element(key).plotly_chart.spec for key in ("grid-first", "grid-last", DETAIL)}
        finally:
            await s.close()

    for name in sorted(load_run["plans"]):
        final = seen[(name, "channel")]
        reference = L.run_async(alone, final["query"])
        for key, spec in reference.items():
            assert final["charts"][key] == spec, f"{name}: {key} differs from a lone session on ?{final['query']}"
