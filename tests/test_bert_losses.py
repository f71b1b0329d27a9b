"""TinyBERT / DistilBERT losses against hand computations; the layer map; attention scores."""

import math

import pytest
import torch

from bench.models.losses import attention_mse, cosine_hidden_loss, layer_map, masked_mse, soft_cross_entropy


def test_soft_cross_entropy_by_hand():
    """TinyBERT's code averages -p_t log p_s over batch and classes: per example, the soft
    cross-entropy over C classes divided by C."""
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (3/4, 1/4)
    assert soft_cross_entropy(s, t).item() == pytest.approx(math.log(2) / 2)  # -sum p_t log(1/2), / 2 classes
    s2 = torch.tensor([[math.log(3.0), 0.0]])
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / 2  # the teacher's entropy / 2 classes
    assert soft_cross_entropy(s2, t).item() == pytest.approx(expected)
    # temperature: T=2 on logits (2 ln 3, 0) is T=1 on (ln 3, 0); no T^2 factor
    assert soft_cross_entropy(s2 * 2, t * 2, temperature=2.0).item() == pytest.approx(expected)
    # two examples: the mean of the two
    both = soft_cross_entropy(torch.cat([s, s2]), torch.cat([t, t])).item()
    assert both == pytest.approx((math.log(2) / 2 + expected) / 2)


def test_masked_mse_ignores_padding():
    a = torch.tensor([[[1.0, 1.0], [5.0, 5.0]]])  # (batch 1, len 2, width 2)
    b = torch.zeros_like(a)
    mask = torch.tensor([[1, 0]])[:, :, None]  # second token is padding
    assert masked_mse(a, b, mask).item() == pytest.approx(1.0)


def test_attention_mse_averages_heads_over_real_pairs():
    s = torch.zeros(1, 2, 3, 3)
    t = torch.zeros(1, 2, 3, 3)
    t[0, 0, :2, :2] = 2.0  # head 0: squared error 4 on the 4 real pairs
    t[0, 1, 2, :] = 100.0  # padded query row: ignored
    mask = torch.tensor([[1, 1, 0]])
    # head 0 MSE = 4, head 1 MSE = 0 over the 2x2 real pairs -> mean over heads 2
    assert attention_mse(s, t, mask).item() == pytest.approx(2.0)
    # different head counts: head-averaged maps are compared: (1, 1, 3, 3) means 1.0 on real pairs
    assert attention_mse(torch.zeros(1, 1, 3, 3), t, mask).item() == pytest.approx(1.0)


def test_cosine_hidden_loss_by_hand():
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [3.0, 3.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # token 0: cos 1 -> 0; token 1: cos 0 -> 1; token 2 is padding
    assert cosine_hidden_loss(s, t, mask).item() == pytest.approx(0.5)


def test_layer_map():
    assert layer_map(4, 12) == [0, 3, 6, 9, 12]  # TinyBERT-4 from BERT-base
    assert layer_map(2, 6) == [0, 3, 6]
    assert layer_map(4, 6) == [0, 2, 3, 5, 6]  # 1.5 -> 2, 4.5 -> 5 (half up)
    with pytest.raises(ValueError):
        layer_map(7, 6)


def test_attention_scores_are_the_pre_softmax_scores():
    from transformers import AutoModelForSequenceClassification, BertConfig

    from bench.models.features import forward_features
    from bench.models.nets import SequenceClassifier

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=32,
        attn_implementation="eager",
    )
    model = SequenceClassifier(AutoModelForSequenceClassification.from_config(config)).eval()
    ids = torch.tensor([[1, 5, 7, 2]])
    mask = torch.ones_like(ids)
    f = forward_features(model, {"input_ids": ids, "attention_mask": mask})
    ref = model.hf(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert len(f.hidden) == 3 and len(f.scores) == 2
    for mine, theirs in zip(f.scores, ref.attentions):
        torch.testing.assert_close(mine.softmax(-1), theirs)


def _tiny_bert(layers):
    from transformers import AutoModelForSequenceClassification, BertConfig

    from bench.models.nets import SequenceClassifier

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    return SequenceClassifier(AutoModelForSequenceClassification.from_config(config))


@pytest.mark.parametrize(
    "depth,layers,expected",
    [
        (6, None, [0, 2, 4]),  # every other layer
        (12, None, [0, 2, 4, 7, 9, 11]),  # Sanh et al.'s extraction for 12-layer teachers
        (12, (1, 5, 11), [1, 5, 11]),  # set in the spec: method.layers
    ],
)
def test_distilbert_student_takes_the_primary_layers(depth, layers, expected):
    from bench.methods.distilbert import primary_layers

    teacher = _tiny_bert(depth)
    student = primary_layers(teacher, layers)
    assert student.hf.config.num_hidden_layers == len(expected) and teacher.hf.config.num_hidden_layers == depth
    t_layers, s_layers = teacher.hf.bert.encoder.layer, student.hf.bert.encoder.layer
    for i, j in enumerate(expected):
        torch.testing.assert_close(s_layers[i].attention.self.query.weight, t_layers[j].attention.self.query.weight)
        torch.testing.assert_close(s_layers[i].output.dense.weight, t_layers[j].output.dense.weight)
    torch.testing.assert_close(student.hf.classifier.weight, teacher.hf.classifier.weight)
    torch.testing.assert_close(
        student.hf.bert.embeddings.word_embeddings.weight, teacher.hf.bert.embeddings.word_embeddings.weight
    )


def test_distilbert_layers_beyond_the_teacher_are_refused():
    from bench.methods.distilbert import primary_layers

    with pytest.raises(ValueError, match="the teacher has 6 layers"):
        primary_layers(_tiny_bert(6), (0, 6))
