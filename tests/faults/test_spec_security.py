"""Specs are data: no spec field reaches a library's code-loading options. ``params`` of the
transformer families are an allow-list (config fields from a config; dropout and depth overrides
with pretrained weights), a local folder whose config names custom code (auto_map) is refused,
and every load passes trust_remote_code=False, so the folder's Python never runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO, bench_cli

pytestmark = pytest.mark.timeout(180)

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import BertConfig, BertForSequenceClassification
class EvilConfig(BertConfig):
    model_type = "bert"
class EvilModel(BertForSequenceClassification):
    config_class = EvilConfig
"""

BERT_SPEC = """
name = "sec"
teachers = 2
[task]
name = "cola"
tokenizer = "all-minilm-l6-v2"
[teacher]
model = "bert"
pretrained = "{folder}"
{params}
[student]
model = "bert"
seed = 100
params = {{ hidden_size = 32, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 64 }}
"""

GPT_SPEC = """
name = "sec"
teachers = 2
[task]
name = "lm"
data = "corpus.txt"
[teacher]
model = "gpt"
pretrained = "{folder}"
{params}
[student]
model = "gpt"
seed = 100
params = {{ n_layer = 1, n_embd = 32, n_head = 2 }}
"""


@pytest.fixture(scope="module")
def evil_folder(tmp_path_factory):
    """A real tiny BERT checkpoint whose config.json names a local module (auto_map) that writes a
    marker file when imported; returns (folder, marker)."""
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("evil")
    folder, marker = root / "model", root / "MARKER"
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForSequenceClassification(config).save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    data["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForSequenceClassification": "evil.EvilModel",
        "AutoModelForCausalLM": "evil.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps(data))
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return folder, marker


def _plan_refused(project, spec_text: str, *pieces: str) -> str:
    spec = project / "sec.toml"
    spec.write_text(spec_text)
    (project / "corpus.txt").write_text("a line of text\n" * 20)
    before = sorted(p.name for p in project.rglob("*"))
    proc = bench_cli("plan", str(spec), cwd=project, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for piece in pieces:
        assert piece in proc.stderr, proc.stderr
    assert sorted(p.name for p in project.rglob("*")) == before
    return proc.stderr


@pytest.mark.parametrize("template", [BERT_SPEC, GPT_SPEC], ids=["bert", "gpt"])
@pytest.mark.parametrize(
    "params",
    [
        "trust_remote_code = true",
        'code_revision = "main"',
        'auto_map = { AutoConfig = "evil.EvilConfig" }',
        'gguf_file = "x.gguf"',
    ],
)
def test_code_loading_options_in_params_are_refused_at_plan(project, evil_folder, template, params):
    folder, marker = evil_folder
    key = params.split(" ")[0]
    spec = template.format(folder="all-minilm-l6-v2", params=f"params = {{ {params} }}")
    _plan_refused(project, spec, "sec.toml: field 'teacher.params." + key + "'", "specs are data")
    assert not marker.exists()


@pytest.mark.parametrize("template", [BERT_SPEC, GPT_SPEC], ids=["bert", "gpt"])
def test_a_pretrained_folder_naming_custom_code_is_refused_at_plan(project, evil_folder, template):
    folder, marker = evil_folder
    _plan_refused(
        project,
        template.format(folder=folder, params=""),
        "field 'teacher.pretrained'",
        "config.json names custom code (auto_map)",
    )
    assert not marker.exists()


def test_a_tokenizer_folder_naming_custom_code_is_refused_at_plan(project, evil_folder):
    folder, marker = evil_folder
    spec = BERT_SPEC.format(folder="all-minilm-l6-v2", params="").replace(
        'tokenizer = "all-minilm-l6-v2"', f'tokenizer = "{folder}"'
    )
    _plan_refused(project, spec, "field 'task.tokenizer'", "names custom code")


@pytest.mark.parametrize(
    "role, params, expected",
    [
        ("teacher", "num_labels = 3", "not a config override allowed with pretrained weights"),
        ("teacher", "hidden_dropout_prob = 1.5", "expected a number 0 <= value < 1"),
        ("student", "vocab_size = 10", "not a config field of model 'bert'"),
        ("student", "hidden_size = 100000000000", "expected an integer 1 <= value <= 1048576"),
        ("student", 'hidden_act = "os.system"', "expected one of: gelu"),
    ],
)
def test_transformer_params_are_an_allow_list(project, role, params, expected):
    spec = BERT_SPEC.format(folder="all-minilm-l6-v2", params=f"params = {{ {params} }}" if role == "teacher" else "")
    if role == "student":
        spec = spec.replace("params = { hidden_size = 32,", f"params = {{ {params}, hidden_size_x = 0,")
        spec = spec.replace(
            ", hidden_size_x = 0, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 64", ""
        )
    _plan_refused(project, spec, f"field '{role}.params.", expected)


def _build_in_subprocess(tmp_path, folder, params: dict) -> subprocess.CompletedProcess:
    """Build a bert model from ``folder`` as a worker would, in a fresh process whose transformers
    module cache is private (so even a failure of this test writes nothing outside tmp_path)."""
    code = textwrap.dedent(f"""
        from bench.models.builders import MODELS, Shape
        from bench.core.config import TrainSpec
        spec = TrainSpec(model="bert", pretrained={str(folder)!r}, params={params!r})
        try:
            model = MODELS["bert"].build(spec, Shape(num_labels=2, vocab_size=64))
            print("built", type(model.hf).__name__)
        except Exception as e:
            print("refused", type(e).__name__, e)
        """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=150)


@pytest.mark.parametrize("params", [{}, {"trust_remote_code": True}])
def test_building_from_a_folder_with_custom_code_never_runs_it(tmp_path, evil_folder, params):
    folder, marker = evil_folder
    proc = _build_in_subprocess(tmp_path, folder, params)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), proc.stdout
    if params:  # a job config from a record is data too: the builder checks the allow-list again
        assert "refused SpecError" in proc.stdout and "trust_remote_code" in proc.stdout, proc.stdout
    else:  # a built-in architecture: its own class, never the folder's
        assert "built BertForSequenceClassification" in proc.stdout, proc.stdout + proc.stderr


def test_every_transformers_load_passes_trust_remote_code_false():
    import ast

    problems = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr not in ("from_pretrained", "load_dataset"):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            value = kw.get("trust_remote_code")  # explicit: a **dict cannot then set it (duplicate keyword)
            if not (isinstance(value, ast.Constant) and value.value is False):
                problems.append(f"{path.name}:{node.lineno}: {node.func.attr} without trust_remote_code=False")
    assert not problems, problems
