"""Importing bench (every module of it), or building its models, leaves the user's libraries as they
were: logging levels and handlers (the root logger's and every library's; bench's own logger has
none until its command line or worker sets one) and transformers' verbosity, warning filters,
environment variables, signal handlers, torch's thread counts, numpy's error handling. What bench's
own worker needs it sets in the worker (engines.worker.quiet_libraries).

The libraries bench imports change some of these themselves when imported (torch sets
TORCHINDUCTOR_CACHE_DIR, scipy adds warning filters): so the state after bench is compared with
the state of a fresh interpreter that imports the very same modules without bench."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO

STATE = r"""
import json, logging, os, signal, sys, warnings
import numpy, torch
from transformers.utils import logging as hf_logging

def state():
    return {
        "env": dict(os.environ),
        "warnings": sorted({repr(f) for f in warnings.filters}),
        "loggers": {n: l.level for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger)},
        "root": logging.root.level,
        "root_handlers": [type(h).__name__ for h in logging.root.handlers],
        "handlers": {
            n: len(l.handlers) for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger)
        },
        "bench_logger": [len(logging.getLogger("bench").handlers), logging.getLogger("bench").level],
        "transformers": hf_logging.get_verbosity(),
        "signals": {s.name: repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)},
        "threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "numpy": numpy.geterr(),
    }
"""

WITH_BENCH = (
    STATE
    + r"""
import importlib, pkgutil, bench
for m in pkgutil.walk_packages(bench.__path__, "bench."):
    importlib.import_module(m.name)
# building models (what a library user may call) changes nothing either
from bench.core.config import TrainSpec
from bench.models.builders import MODELS, Shape
small = {"bert": {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8},
         "gpt": {"n_layer": 1, "n_embd": 8, "n_head": 2}}
for family, params in small.items():
    MODELS[family].build(TrainSpec(model=family, params=params), Shape(num_labels=2, vocab_size=50, context=8))
modules = [m for m in list(sys.modules) if m.split(".")[0] not in ("bench", "__main__")]
print(json.dumps({"state": state(), "modules": modules}))
"""
)

WITHOUT_BENCH = (
    STATE
    + r"""
import importlib
for m in json.loads(sys.stdin.read()):
    try:
        importlib.import_module(m)
    except BaseException:  # private modules that only load as part of their parent
        pass
print(json.dumps({"state": state()}))
"""
)


def _run(code: str, stdin: str = "") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code], input=stdin, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_bench_and_building_models_changes_no_global_state():
    with_bench = _run(WITH_BENCH)
    assert "transformers" in " ".join(with_bench["modules"])  # the builders did run
    baseline = _run(WITHOUT_BENCH, json.dumps(with_bench["modules"]))["state"]
    after = with_bench["state"]
    common = set(after["loggers"]) & set(baseline["loggers"])
    for part in ("loggers", "handlers"):
        after[part] = {n: after[part][n] for n in common}
        baseline[part] = {n: baseline[part][n] for n in common}
    assert after["bench_logger"] == [0, 0]  # bench's own logger: no handler, no level, until its CLI sets one
    changed = {k: (baseline[k], after[k]) for k in after if after[k] != baseline[k]}
    assert changed == {}, changed
