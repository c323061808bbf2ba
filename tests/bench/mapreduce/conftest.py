"""Paths for the LLM×MapReduce benchmark tools' tests (bench/mapreduce).

The data sets live outside the repository; the environment variables override where:
  LOOM_IB_PREDS_DIR   InfiniteBench predictions of Llama3-70B×MR (preds_<task>.jsonl)
  LOOM_HAYSTACK_DIR   Paul Graham essays (*.txt), the needle tasks' haystack
Tests that need a missing data set or the model skip with the reason.
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"  # the team's read-only data, beside the checkout
PREDS_DIR = Path(os.environ.get("LOOM_IB_PREDS_DIR",
                                SHARED / "infinitebench_preds" / "llama3-70b-mapreduce"))
HAYSTACK_DIR = Path(os.environ.get("LOOM_HAYSTACK_DIR",
                                   SHARED / "haystack" / "paul_graham_essays"))
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def preds_dir():
    if not (PREDS_DIR / "preds_passkey.jsonl").exists():
        pytest.skip(f"no InfiniteBench predictions in {PREDS_DIR} (set LOOM_IB_PREDS_DIR)")
    return PREDS_DIR


@pytest.fixture(scope="session")
def model_path():
    if not MODEL.exists():
        pytest.skip(f"no model at {MODEL} (make model)")
    return MODEL


@pytest.fixture(scope="session")
def haystack_dir():
    if not any(HAYSTACK_DIR.glob("*.txt")):
        pytest.skip(f"no haystack essays in {HAYSTACK_DIR} (set LOOM_HAYSTACK_DIR)")
    return HAYSTACK_DIR
