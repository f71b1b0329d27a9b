"""Spec validation: every user error names file, field and expectation, exits 2, writes nothing."""

import dataclasses
from pathlib import Path

import pytest
from helpers import digits_spec

from bench.cli import main
from bench.core.errors import SpecError
from bench.spec.load import load_sweep


def _error(capsys, path: Path, *cmd: str) -> str:
    before = sorted(p.name for p in path.parent.iterdir())
    assert main([*(cmd or ("run",)), str(path)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing written
    assert str(path) in out.err
    return out.err


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ('name = "kd"', 'name = "kdd"', ["method.name", "unknown method 'kdd'", "did you mean 'kd'"]),
        ("repeats = 1", "repeats = 0", ["'repeats'", "expected a value >= 1, got 0"]),
        ("repeats = 1", "repeats = 1\nk = [1, 4]", ["'k[1]'", "expected 1 <= k <= teachers (3), got 4"]),
        ("epochs = 3", 'epochs = "3"', ["teacher.epochs", "expected an integer, got '3' (str)"]),
        ("lr = 0.01\nseed", "lr = 0.01\nepohcs = 2\nseed", ["teacher.epohcs", "did you mean 'epochs'"]),
        ('name = "digits"', 'name = "digit"', ["task.name", "unknown task 'digit'", "did you mean 'digits'"]),
        (
            'model = "mlp"\nparams = { hidden = [32] }',
            'model = "mpl"\nparams = { hidden = [32] }',
            ["teacher.model", "unknown model 'mpl'", "did you mean 'mlp'"],
        ),
        ("teachers = 3", "teachers = 3.5", ["'teachers'", "expected an integer, got 3.5"]),
        ("teachers = 3", "", ["'teachers'", "missing (required)"]),
        ("teachers = 3", "teachers = 3\nrepeat = 2", ["'repeat'", "did you mean 'repeats'"]),
        ('devices = ["cpu"]', 'devices = ["gpu0"]', ["run.devices[0]", "expected 'cpu' or 'cuda:N'"]),
        ('name = "kd"', 'name = "kd"\ntemprature = 2', ["method.temprature", "did you mean 'temperature'"]),
        ('name = "kd"', 'name = "kd"\nalpha = 1.5', ["method.alpha", "expected 0 <= alpha <= 1"]),
        ('name = "kd"', 'name = "tinybert"', ["teacher.model", "method 'tinybert' distils BERT-family encoders"]),
        ('name = "kd"', 'name = "tinybert"\nild_epochs = 1.5', ["method.ild_epochs", "expected an integer"]),
        ("[run]", "[grid]\ntemperature = []\n[run]", ["grid.temperature", "non-empty list"]),
        # a student seed equal to a teacher's replays that teacher's data order (teachers use 10..12)
        (
            "lr = 0.01\n\n[method]",
            "lr = 0.01\nseed = 12\n\n[method]",
            ["student.seed", "overlap teacher seeds 10..12", "at [12]", "e.g. student.seed = 13"],
        ),
        ("[run]", "[grid]\ntau = [1, 2]\n[run]", ["grid.tau", "not a parameter of method 'kd'"]),
        ("threads_per_job = 1", "retries = -1", ["run.retries", "expected a value >= 0"]),
        ("threads_per_job = 1", "energy = { pue = 0.5 }", ["run.energy.pue", "expected a value >= 1"]),
        ("threads_per_job = 1", "energy = { watt_per_core = 5 }", ["run.energy.watt_per_core", "did you mean"]),
        ("threads_per_job = 1", "timeout = nan", ["run.timeout", "expected a finite number, got nan"]),
        ("seed = 10", "seed = -1", ["teacher.seed", "expected a value >= 0, got -1"]),
        ("teachers = 3", "teachers = 40", ["'teachers'", "expected a plan of at most 1,000,000 jobs"]),
        ("params = { hidden = [32] }", "params = { hidden = [true] }", ["teacher.params.hidden", "positive integers"]),
        (
            'model = "mlp"\nparams = { hidden = [8] }',
            'model = "bert"\nparams = {}',
            [
                "student.model",
                "task 'digits' takes image models (mlp, cnn, resnet, resnet8, resnet14, resnet20, resnet32, resnet44, "
                "resnet56, resnet110), got 'bert'",
            ],
        ),
        (
            'model = "mlp"\nparams = { hidden = [8] }',
            'model = "mlp"\nparams = { hidden = [8, 0] }',
            ["student.params.hidden", "expected a non-empty list of positive integers"],
        ),
        ("[run]", '[design]\nkind = "adaptiv"\n[run]', ["design.kind", "did you mean 'adaptive'"]),
        ("[run]", '[design]\nkind = "adaptive"\nk = 1\n[run]', ["design.k", "a planned k > 1 with k = 1"]),
        ("[run]", "[design]\nbudget = 0\n[run]", ["design.budget", "expected a fraction 0 < budget <= 1"]),
        ("[run]", "[design]\nerror = 1.5\n[run]", ["design.error", "expected an error rate 0 < error < 1"]),
        ("[run]", '[design]\nstatistic = "worst"\n[run]', ["design.statistic", "expected one of: worst_m"]),
    ],
)
def test_spec_errors(project, capsys, old, new, expected):
    path = digits_spec(project)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    err = _error(capsys, path)
    for piece in expected:
        assert piece in err, err


def test_toml_syntax_error_and_missing_file(project, capsys):
    path = project / "bad.toml"
    path.write_text('name = "x"\nteachers = [1,\n')
    assert "invalid TOML" in _error(capsys, path, "plan")
    assert main(["plan", str(project / "nope.toml")]) == 2
    assert "cannot read the spec file" in capsys.readouterr().err


_DISTIL = (
    'name = "d"\nteachers = 2\n[task]\nname = "cola"\ntokenizer = "all-minilm-l6-v2"\n'
    '[teacher]\nmodel = "bert"\nparams = {{ num_hidden_layers = 6 }}\n[student]\nmodel = "bert"\nseed = 5\n{student}\n'
    '[method]\nname = "distilbert"\n{method}\n'
)


@pytest.mark.parametrize(
    "student,method,expected",
    [
        ('pretrained = "x"', "layers = [0, 2]", ["method.layers", "the student starts from student.pretrained"]),
        ("", "layers = [0, 6]", ["method.layers", "below 6 (the teacher's num_hidden_layers)", "[0, 6]"]),
        ("", "layers = [2, 0]", ["method.layers", "increasing list of distinct integers"]),
        ("", "layers = 3", ["method.layers", "got 3"]),
        ("params = { hidden_size = 8 }", "", ["student.params", "expected no student params"]),
        ("", "[grid]\nlayers = [[0], [1]]", ["grid.layers", "not a grid axis"]),
    ],
)
def test_distilbert_student_init_errors(project, capsys, student, method, expected):
    path = project / "d.toml"
    path.write_text(_DISTIL.format(student=student, method=method))
    err = _error(capsys, path, "plan")
    for piece in expected:
        assert piece in err, err


def test_distilbert_student_init_choices_load(project):
    path = project / "d.toml"
    path.write_text(_DISTIL.format(student='pretrained = "distilbert-base-uncased"', method=""))
    assert "layers" not in load_sweep(path).method.params  # run-time default: the key does not carry it
    path.write_text(_DISTIL.format(student="", method="layers = [0, 3, 5]"))
    assert load_sweep(path).method.params["layers"] == (0, 3, 5)


def test_non_utf8_spec(project, capsys):
    path = project / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    assert "expected a UTF-8 text file" in _error(capsys, path, "plan")


def test_missing_data_folder_is_named(project, capsys):
    path = project / "text.toml"
    path.write_text(
        'name = "t"\nteachers = 2\n[task]\nname = "cola"\ndata = "no/such/dir"\n'
        'tokenizer = "all-minilm-l6-v2"\n[teacher]\nmodel = "bert"\n[student]\nmodel = "bert"\n'
    )
    err = _error(capsys, path, "plan")
    assert "task.data" in err and "expected an existing folder" in err


def test_valid_spec_loads_into_frozen_dataclasses(project):
    sweep = load_sweep(digits_spec(project, n=4, r=2))
    assert sweep.teachers == 4 and sweep.k == (1, 2, 3, 4) and sweep.repeats == 2
    assert sweep.method.params == {"temperature": 2.0, "alpha": 0.5}  # defaults filled in
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.teachers = 5  # frozen
    with pytest.raises(SpecError):
        load_sweep(project / "missing.toml")


def test_shipped_specs_are_valid(monkeypatch):
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    for spec in sorted(repo.glob("sweeps/**/*.toml")):
        if "glue" in spec.read_text() and not (repo.parent / "shared" / "data" / "glue").is_dir():
            continue
        assert main(["plan", str(spec)]) == 0, spec
