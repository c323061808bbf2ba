"""The LLM×MapReduce benchmark's bookkeeping (bench/mapreduce/run.py): which stored rows a run
reuses, when an earlier file is refused, and the plot. No server and no model."""
import json

import pytest

from bench.mapreduce import run


def example(i, answer, depth=0.5):
    return {"id": i, "answer": [answer], "depth": depth}


def row(i, answer, depth=0.5, **kw):
    return {"id": i, "answer": [answer], "depth": depth, "pred": answer, "seconds": 1.0,
            "tokens": 10, **kw}


def test_reuse_keeps_rows_of_unchanged_examples_only():
    cell = {"examples": {"mapreduce": [
        row(0, "111"),                      # same example: kept
        row(1, "222", error="HTTP 500"),    # failed: run again
        row(2, "333"),                      # the generator now makes another answer: run again
        row(3, "444", depth=0.1),           # ... or puts the needle elsewhere: run again
    ]}}
    examples = [example(0, "111"), example(1, "222"), example(2, "999"), example(3, "444")]
    assert list(run.reuse(cell, "mapreduce", examples)) == [0]
    assert run.reuse(None, "mapreduce", examples) == {}


def test_load_previous_refuses_other_settings(tmp_path):
    settings = {"model": "/a/SmolLM2.gguf", "threads": 2, "context_window": 1024,
                "max_tokens": 150, "evidence": "grounded", "values": "auto", "seed": 0,
                "rules": "x"}
    path = tmp_path / "mapreduce.json"
    cell = {"task": "passkey", "length": 16384, "examples": {"mapreduce": [], "truncation": []}}
    path.write_text(json.dumps({**settings, "cells": [cell]}))
    # The model is compared by file name: a checkout elsewhere reuses the rows.
    same = {**settings, "model": "/elsewhere/SmolLM2.gguf"}
    assert list(run.load_previous(str(path), same)) == [("passkey", 16384)]
    with pytest.raises(SystemExit, match="max_tokens"):
        run.load_previous(str(path), {**settings, "max_tokens": 300})
    assert run.load_previous(str(tmp_path / "missing.json"), settings) == {}


def test_plot_one_legend_under_the_panels(tmp_path):
    def cell(task, k, mr, tr, kept):
        return {"task": task, "length": k * 1024, "mapreduce": {"accuracy": mr, "n": 20},
                "truncation": {"accuracy": tr, "n": 20, "in_window": kept}}
    result = {"model": "/m/SmolLM2.gguf", "context_window": 1024, "window": 8192, "cells": [
        cell("passkey", 4, 100, 90, 100), cell("passkey", 16, 100, 10, 75),
        cell("passkey", 128, 100, 0, 10), cell("kv_retrieval", 16, 65, 0, 70)]}
    path = tmp_path / "mapreduce.png"
    fig = run.plot(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["kv_retrieval", "passkey"]
    # No legend inside a panel, where it covered the lines; one for the figure.
    assert all(ax.get_legend() is None for ax in axes)
    assert len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Loom×MapReduce", "truncated", "value kept by truncation",
                      "window / length"]
    # The window / length line: 8K of 4K is all of it, of 16K half, of 128K 1/16.
    line = [ln for ln in axes[1].get_lines() if ln.get_label() == "window / length"][0]
    assert list(line.get_ydata()) == [100.0, 50.0, 6.25]


def test_plot_legend_fits_a_one_task_figure(tmp_path):
    # One panel is narrower than four labels in a row: the legend must stay inside the figure.
    result = {"model": "/m/SmolLM2.gguf", "context_window": 1024, "window": 8192, "cells": [
        {"task": "kv_retrieval", "length": k * 1024, "mapreduce": {"accuracy": 65, "n": 20},
         "truncation": {"accuracy": 0, "n": 20, "in_window": 10}} for k in (64, 128)]}
    fig = run.plot(result, str(tmp_path / "mapreduce.png"))
    renderer = fig.canvas.get_renderer()
    box = fig.legends[0].get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height
    # and below the panel's axis label
    label = fig.get_axes()[0].xaxis.label.get_window_extent(renderer)
    assert box.y1 <= label.y0
