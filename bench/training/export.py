"""Models in a form other tools load: a transformers folder for the ``bert`` and ``gpt`` families,
a safetensors state dict with a small JSON description for the others.

- **transformers folder** (``hf/`` in a teacher's folder, or a saved student's folder): the
  wrapped model's ``save_pretrained`` (``config.json``, ``model.safetensors``), the tokenizer the
  task's ids came from (``save_pretrained``; the LM's locally trained BPE as a
  ``PreTrainedTokenizerFast``) and a ``README.md`` model card, so that
  ``AutoModelForSequenceClassification`` / ``AutoModelForCausalLM`` and ``AutoTokenizer``
  ``.from_pretrained(folder)`` load them without bench.
- **state dict** (mlp, cnn, resnet, CIFAR ResNets; students only: a teacher's own
  ``model.safetensors`` already is one): ``model.safetensors`` (``safetensors.torch.save_model``)
  and ``model.json`` (family, training settings, task shape): ``load_state_dict_model`` rebuilds it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from bench.core.config import train_spec
from bench.core.files import atomic_write_json, file_mode, read_json
from bench.core.provenance import provenance
from bench.models.builders import MODELS, Shape

HF_FOLDER = "hf"  # a teacher's transformers folder, inside the teacher's folder
STATE_FORMAT = "bench-state-dict"  # model.json's "format" for a state dict


def wrapped_hf(model: Any) -> Any | None:
    """The transformers model a bench module wraps (``SequenceClassifier``, ``CausalLM``: ``.hf``),
    or None for the families that are plain torch modules."""
    hf = getattr(model, "hf", None)
    return hf if hasattr(hf, "save_pretrained") else None


def hf_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer with ``save_pretrained``: a transformers tokenizer as it is, a bare
    ``tokenizers.Tokenizer`` (the LM's BPE) wrapped in a ``PreTrainedTokenizerFast``."""
    if hasattr(tokenizer, "save_pretrained"):
        return tokenizer
    from transformers import PreTrainedTokenizerFast  # lazy: transformers only where a model is saved

    from bench.tasks.lm import EOS  # lazy: only the LM's bare tokenizers get here

    special = {"eos_token": EOS, "bos_token": EOS} if tokenizer.token_to_id(EOS) is not None else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)


def _scores_table(scores: dict) -> list[str]:
    rows = ["| split | metric | value |", "|---|---|---|"]
    rows += [f"| {split} | {metric} | {value:.4f} |" for split, by in scores.items() for metric, value in by.items()]
    return rows


def model_card(title: str, facts: dict, scores: dict, hf: Any) -> str:
    """A README.md for a transformers folder: front matter, what the model is (``facts``), its
    scores per split and metric, bench's version, and how to load it."""
    causal = hf.can_generate()  # GPT-2's LM head model, not a sequence classifier
    auto = "AutoModelForCausalLM" if causal else "AutoModelForSequenceClassification"
    versions = provenance()
    lines = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {'text-generation' if causal else 'text-classification'}",
        "tags: [knowledge-distillation, bench]",
        "---",
        "",
        f"# {title}",
        "",
        *[f"- {name}: {value}" for name, value in facts.items()],
        f"- bench: {versions['versions'].get('bench', 'unknown')} (git commit {versions['git_commit'] or 'unknown'})",
        f"- transformers: {versions['versions'].get('transformers', 'unknown')}",
        "",
        "## Scores",
        "",
        *_scores_table(scores),
        "",
        "## Loading",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {auto}",
        "",
        f'model = {auto}.from_pretrained("<this folder>")',
        'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
        "```",
        "",
    ]
    return "\n".join(lines)


def _readable(folder: Path) -> None:
    """Files libraries create 0600 get the mode ``open`` would give (colleagues share the roots)."""
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, file_mode())


def save_hf(model: Any, tokenizer: Any, folder: Path, card: str) -> None:
    """Write ``model``'s transformers folder into ``folder`` (created): weights as safetensors, the
    config, the tokenizer (if any) and ``card`` as README.md."""
    hf = wrapped_hf(model)
    if hf is None:
        raise ValueError(f"{type(model).__name__} wraps no transformers model")
    from transformers.utils import logging as hf_logging  # lazy: transformers only where a model is saved

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars in worker logs
    folder.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        hf_tokenizer(tokenizer).save_pretrained(folder)
    (folder / "README.md").write_text(card)
    _readable(folder)


def save_state_dict(model: Any, folder: Path, description: dict) -> None:
    """Write ``model`` as ``model.safetensors`` and ``description`` (``model_description``) as
    ``model.json`` into ``folder`` (created)."""
    from safetensors.torch import save_model  # lazy: torch only where a model is saved

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))
    atomic_write_json(folder / "model.json", description)
    _readable(folder)


def model_description(model_config: dict, seed: int, shape: Shape, facts: dict) -> dict:
    """What ``load_state_dict_model`` needs to rebuild a model (family and settings as in the job
    config, its seed, the task's shape), plus ``facts`` for a reader."""
    return {
        "format": STATE_FORMAT,
        "model": model_config,
        "seed": seed,
        "shape": dataclasses.asdict(shape),
        "load": "bench.training.export.load_state_dict_model(folder)",
        **facts,
    }


def load_state_dict_model(folder: str | os.PathLike, device: Any = "cpu") -> Any:
    """A model saved by ``save_state_dict``, rebuilt from its ``model.json``, in eval mode."""
    from safetensors.torch import load_model  # lazy: torch only where a model is loaded

    folder = Path(folder)
    desc = read_json(folder / "model.json")
    if desc.get("format") != STATE_FORMAT:
        raise ValueError(f"{folder / 'model.json'}: expected format {STATE_FORMAT!r}, got {desc.get('format')!r}")
    spec = train_spec(desc["model"], desc["seed"])
    shape = Shape(**{**desc["shape"], "input_shape": tuple(desc["shape"]["input_shape"])})
    model = MODELS[spec.model].build(spec, shape)
    load_model(model, str(folder / "model.safetensors"))
    return model.to(device).eval()


def save_model_folder(folder: str | os.PathLike, model: Any, tokenizer: Any, card: str, description: dict) -> str:
    """Save ``model`` into ``folder``, replacing what is there, atomically (built under a temporary
    name, then renamed): a transformers folder when it wraps one, else a state dict. Returns the
    format written: ``transformers`` or ``state-dict``."""
    final = Path(folder)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")  # removed by remove_stale_temps if we die
    shutil.rmtree(tmp, ignore_errors=True)
    if wrapped_hf(model) is not None:
        save_hf(model, tokenizer, tmp, card)
        kind = "transformers"
    else:
        save_state_dict(model, tmp, description)
        kind = "state-dict"
    if final.exists():  # an earlier attempt of the same job saved it: this attempt's replaces it
        shutil.rmtree(final)
    os.rename(tmp, final)
    return kind
