"""Bad input found before anything runs: one clear message (file, field or line, expected), exit
code 2, no traceback, nothing written. (Spec errors: malformed TOML, unknown keys, wrong types,
k > N, N < 1, r < 1, empty grid, unknown task / model / method / device names, a missing data
folder: tests/test_spec.py.)"""

import shutil

import pytest
from helpers import GLUE, bench_cli

pytestmark = pytest.mark.timeout(900)  # a hang guard, not a speed limit

GLUE_SPEC = """
name = "g"
teachers = 2
[task]
name = "cola"
data = "glue"
tokenizer = "all-minilm-l6-v2"
[teacher]
model = "bert"
pretrained = "all-minilm-l6-v2"
[student]
model = "bert"
seed = 100
params = {{ hidden_size = 32, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 64 }}
{paths}
"""


def _glue_project(project, dev_text: str, paths: str = ""):
    (project / "glue" / "CoLA").mkdir(parents=True)
    shutil.copy(GLUE / "CoLA" / "train.tsv", project / "glue" / "CoLA" / "train.tsv")
    (project / "glue" / "CoLA" / "dev.tsv").write_text(dev_text)
    spec = project / "g.toml"
    spec.write_text(GLUE_SPEC.format(paths=paths))
    return spec


def _refused(project, spec, *pieces):
    before = sorted(p.name for p in project.rglob("*"))
    proc = bench_cli("run", str(spec), cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for piece in pieces:
        assert piece in proc.stderr, proc.stderr
    assert sorted(p.name for p in project.rglob("*")) == before  # nothing written
    return proc.stderr


@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")
def test_a_glue_file_with_wrong_columns(project):
    spec = _glue_project(project, "gj04\tnot-a-label\t\tThe sailors rode the breeze.\n")
    _refused(project, spec, "glue/CoLA/dev.tsv:1: expected a label in column 2 and text in columns [4]")


@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")
def test_an_empty_glue_split(project):
    spec = _glue_project(project, "")
    _refused(project, spec, "glue/CoLA/dev.tsv: expected at least one example")


@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")
@pytest.mark.parametrize(
    "root, expected", [("spec-is-a-file/results", "is not a folder"), ("/proc/bench-results", "cannot write in /proc")]
)
def test_an_output_root_that_cannot_be_written(project, root, expected):
    (project / "spec-is-a-file").write_text("a file, not a folder\n")
    spec = _glue_project(project, (GLUE / "CoLA" / "dev.tsv").read_text(), paths=f'[paths]\nresults = "{root}"')
    _refused(project, spec, "g.toml: field 'paths.results': expected a writable folder", expected)
