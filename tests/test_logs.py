"""Diagnostics through `logging`: bench's command line puts one handler on the "bench" logger
(never the root logger's or another library's), lines as they always looked ("warning: ..."),
`-q` keeps warnings only; results stay on stdout."""

from __future__ import annotations

import logging

import pytest
from helpers import bench_cli, digits_spec

from bench.core.logs import LOGGER, configure


@pytest.fixture
def bench_logger():
    """The "bench" logger as it was before the test (no handler, no level), restored after."""
    logger = logging.getLogger(LOGGER)
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_configure_sets_one_handler_on_bench_only_with_the_usual_lines(bench_logger, capsys):
    root = (list(logging.root.handlers), logging.root.level)
    configure()
    configure()  # called again (main twice in one process): still one handler, no doubled lines
    assert len(bench_logger.handlers) == 1 and (list(logging.root.handlers), logging.root.level) == root
    logging.getLogger("bench.core.cache").warning("%s: damaged cache, %s; it is built again", "x.npz", "altered")
    logging.getLogger("bench.driver.run").info("tiny: 1 of 2 teachers to train")
    logging.getLogger("transformers").warning("not ours")  # another library's logger: not through our handler
    assert capsys.readouterr().err == "warning: x.npz: damaged cache, altered; it is built again\n" + (
        "tiny: 1 of 2 teachers to train\n"
    )
    configure(logging.WARNING)  # -q
    logging.getLogger("bench.driver.run").info("hidden")
    logging.getLogger("bench.core.records").warning("shown")
    assert capsys.readouterr().err == "warning: shown\n"


def test_the_cli_warns_on_stderr_and_q_keeps_warnings(project):
    spec = digits_spec(project, n=2)
    bad = project / "results" / "tiny" / "records" / "junk.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    for flags in ((), ("-q",)):
        proc = bench_cli(*flags, "report", str(spec), cwd=project)
        assert proc.returncode == 0, proc.stderr
        assert f"warning: {bad}: " in proc.stderr and proc.stderr.count("warning:") == proc.stderr.count("\n")
        assert proc.stdout.startswith("report: ")  # the result, on stdout
