"""The web demo (`rewardsteer serve`): a Gradio page over the run layer (`rewardsteer.runs`). Pick the generator, target, rewards
and aggregate, held-out judges, method and budget; the trace plot streams while the run goes, then the page shows
the before/after grid, the summary with the cost line and the over-optimization monitor, and result.json to
download. Bad input shows the CLI's one-line error."""

from __future__ import annotations

import io
import math
import tempfile
import time
from pathlib import Path

from ..runs.spec import METHOD_CHOICES
from .policy import (
    AGGREGATES,
    CONDITIONS,
    IMAGE_HELDOUT,
    IMAGE_REWARDS,
    MOLECULE_HELDOUT,
    MOLECULE_REWARDS,
    ROBUST,
    PagePolicy,
    generators,
)
from .session import SteeringRun, changed_options, log_line, one_line

LIVE_EVERY = 0.4  # seconds between live trace updates


def live_plot(rows: list[tuple[int, float, float]], title: str):
    """The objective (mean over the batch, and the best so far) against NFE, as a PIL image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(6, 3.4))
    if rows:
        nfe = [r[0] for r in rows]
        ax.plot(nfe, [r[1] for r in rows], "-", label="objective (batch mean)")
        best, top = [], -math.inf
        for r in rows:
            top = max(top, r[2]) if math.isfinite(r[2]) else top
            best.append(top)
        ax.plot(nfe, best, "--", label="best so far")
        ax.legend(fontsize=8)
    ax.set_xlabel("NFE (generator evaluations)")
    ax.set_ylabel("score")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def form_options(model, target, condition, rewards, aggregate, robust, heldouts, method, n, candidates, iters,
                 particles, steps, max_nfe, max_seconds, seed) -> dict:
    """The page's fields -> job options (`rewardsteer run`'s names); only what differs from the CLI's defaults."""
    form = {"model": model, "class": target, "reward": list(rewards or []), "heldout": list(heldouts or []),
            "method": method, "n": n, "candidates": candidates, "iters": iters, "particles": particles,
            "steps": steps, "max_nfe": max_nfe or None, "max_seconds": max_seconds or None, "seed": seed}
    if model != "moses-mdlm":  # image-only options (a molecule run rejects them, as the CLI does)
        form.update(condition=condition, robust=robust, aggregate=None if aggregate in (None, "", "(none)") else aggregate)
    return changed_options(form)


def build_app(workdir: str | Path | None = None, policy: PagePolicy | None = None):
    """The Gradio Blocks app. Runs write under `workdir` (default: a temporary folder), within `policy`'s limits
    (default: bundled names only, no paths, the default caps)."""
    import gradio as gr

    policy = policy or PagePolicy()
    custom = bool(policy.allow_paths)  # typed values (bt:PATH) only when paths are allowed at all
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rewardsteer-serve-"))
    gens = generators()
    with gr.Blocks(title="rewardsteer") as app:
        gr.Markdown("# rewardsteer\nSteer a bundled generator toward a reward, without retraining, at a known "
                    "compute cost, while held-out judges watch for reward hacking.")
        current = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                model = gr.Dropdown(gens, value="mnist-onestep", label="generator", allow_custom_value=False,
                                    elem_id="model")
                with gr.Row():
                    target = gr.Number(7, precision=0, minimum=0, maximum=9, label="class (the rewards' target)",
                                       elem_id="target")
                    condition = gr.Dropdown(CONDITIONS, value="none", label="condition (what the generator is asked)",
                                            elem_id="condition")
                rewards = gr.Dropdown(IMAGE_REWARDS, value=["proxies-mixed"], multiselect=True, allow_custom_value=custom,
                                      label="reward(s)", elem_id="rewards")
                with gr.Row():
                    aggregate = gr.Dropdown(AGGREGATES, value="(none)", label="aggregate", elem_id="aggregate")
                    robust = gr.Dropdown(ROBUST, value="default", label="robust (EOT)", elem_id="robust")
                heldouts = gr.Dropdown(IMAGE_HELDOUT, value=["judges"], multiselect=True, allow_custom_value=custom,
                                       label="held-out judges (watched, never optimized)", elem_id="heldouts")
                method = gr.Dropdown(METHOD_CHOICES, value="best_of_n", label="method", elem_id="method")
                with gr.Row():
                    n = gr.Number(4, precision=0, label="n (outputs)", elem_id="n")
                    candidates = gr.Number(64, precision=0, label="candidates", elem_id="candidates")
                    iters = gr.Number(20, precision=0, label="iters", elem_id="iters")
                with gr.Row():
                    particles = gr.Number(8, precision=0, label="particles", elem_id="particles")
                    steps = gr.Number(8, precision=0, label="steps (mnist-flow)", elem_id="steps")
                    seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                with gr.Row():
                    max_nfe = gr.Number(None, precision=0, label=f"budget: max NFE (empty: {policy.max_nfe})",
                                        elem_id="max_nfe")
                    max_seconds = gr.Number(None, label=f"budget: max seconds (empty: {policy.max_seconds:g})",
                                            elem_id="max_seconds")
                with gr.Row():
                    go = gr.Button("Steer", variant="primary", elem_id="run")
                    stop = gr.Button("Stop", elem_id="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("", elem_id="status")
                trace = gr.Image(label="trace", type="pil", elem_id="trace", interactive=False)
                grid = gr.Image(label="before (top) / after (bottom)", type="filepath", elem_id="grid",
                                interactive=False)
                summary = gr.Textbox(label="summary", lines=6, interactive=False, elem_id="summary")
                cost = gr.Markdown("", elem_id="cost")
                alarm = gr.Markdown("", elem_id="alarm")
                download = gr.File(label="result.json", elem_id="download", interactive=False)

        def on_model(name):
            if name == "moses-mdlm":
                return (gr.update(choices=MOLECULE_REWARDS, value=["qed"]), gr.update(choices=MOLECULE_HELDOUT,
                        value=["gold"]), gr.update(value="svdd"), gr.update(visible=False), gr.update(visible=False),
                        gr.update(visible=False))
            return (gr.update(choices=IMAGE_REWARDS, value=["proxies-mixed"]),
                    gr.update(choices=IMAGE_HELDOUT, value=["judges"]), gr.update(),
                    gr.update(visible=True), gr.update(visible=True), gr.update(visible=True))

        model.change(on_model, model, [rewards, heldouts, method, condition, aggregate, robust])

        outputs = [status, trace, grid, summary, cost, alarm, download, current]

        def steer(*values):
            blank = (None, None, "", "", "", None, None)
            try:
                options = form_options(*values)
                session = SteeringRun(options, workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{id(values):x}",
                                      policy=policy)
            except Exception as e:  # noqa: BLE001 - whatever it is: one line on the page and in the log
                yield (log_line(one_line(e)), *blank)
                return
            session.start()
            title = f"{options.get('method', 'reno')}: running"
            yield ("running...", live_plot([], title), None, "", "", "", None, session)
            shown = 0
            while session.running:
                session.wait(LIVE_EVERY)
                if len(session.rows) != shown:
                    shown = len(session.rows)
                    yield ("running...", live_plot(list(session.rows), title), None, "", "", "", None, session)
            files = session.files()
            lines = session.summary
            if session.error:
                log_line(session.error)
            if session.error and "result" not in files:
                yield (session.error, live_plot(list(session.rows), "failed"), None, "", "", "", None, None)
                return
            cost_line = next((x for x in lines if x.startswith("cost:")), "")
            monitor = next((x for x in lines if x.startswith("monitor:")), "")
            alarm_text = f"**{monitor}**" if "ALARM" in monitor.upper() and "no over" not in monitor else monitor
            head = session.error or ("stopped" if session.interrupted else "done")
            trace_img = str(files["trace"]) if "trace" in files else live_plot(list(session.rows), "done")
            yield (head, trace_img, str(files["grid"]) if "grid" in files else None, "\n".join(lines), cost_line,
                   alarm_text, str(files["result"]) if "result" in files else None, None)

        inputs = [model, target, condition, rewards, aggregate, robust, heldouts, method, n, candidates, iters,
                  particles, steps, max_nfe, max_seconds, seed]
        go.click(steer, inputs, outputs)

        def on_stop(session):
            if session is not None:
                session.stop()

        stop.click(on_stop, current, None)
    return app


def serve(host: str = "127.0.0.1", port: int = 7860, workdir: str | Path | None = None, quiet: bool = False,
          policy: PagePolicy | None = None):
    """Start the app (blocking) on http://HOST:PORT, its runs within `policy` (rewardsteer serve's --allow-path and
    caps)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from ..bundled.hub import keep_loaded

    keep_loaded(True)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rewardsteer-serve-"))
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    build_app(workdir, policy).queue().launch(server_name=host, server_port=port, share=False, ssr_mode=False, quiet=quiet,
                                      theme=theme, footer_links=[], allowed_paths=[str(workdir)])
