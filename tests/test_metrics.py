import math

import torch

from stabn.engine.accuracy import ClassificationMeter, average_views, topk_correct


def test_topk_on_constructed_scores():
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # label 1: top-1 hit
            [0.5, 0.1, 0.4, 0.0, 0.0, 0.0],  # label 2: second, top-5 hit only
            [0.3, 0.2, 0.1, 0.05, 0.04, 0.6],  # label 3: fifth, top-5 hit only
            [0.9, 0.02, 0.03, 0.01, 0.04, 0.0],  # label 5: sixth, miss
        ]
    )
    labels = torch.tensor([1, 2, 3, 5])
    assert topk_correct(scores, labels, (1, 5)) == {1: 1, 5: 3}


def test_ties_rank_the_lower_class_first():
    scores = torch.zeros(2, 4)
    assert topk_correct(scores, torch.tensor([0, 1]), (1,)) == {1: 1}


def test_meter_accuracy_confusion_and_per_class():
    meter = ClassificationMeter(3, ks=(1, 2))
    scores = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 1, 2], [2, 0, 1], [0, 0, 1]])
    labels = torch.tensor([0, 1, 2, 2, 1])
    meter.update(scores[:2], labels[:2])
    meter.update(scores[2:], labels[2:])
    assert meter.count == 5
    assert meter.topk() == {1: 3 / 5, 2: 4 / 5}
    assert meter.confusion.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    per_class = meter.per_class_accuracy().tolist()
    assert per_class == [1.0, 0.5, 0.5]


def test_class_without_samples_is_nan():
    meter = ClassificationMeter(3)
    meter.update(torch.tensor([[1.0, 0, 0]]), torch.tensor([0]))
    assert math.isnan(meter.per_class_accuracy()[2].item())


def test_view_averaging_by_hand():
    # two videos x three views, two classes
    logits = torch.tensor([[0.0, 10.0], [2.0, 0.0], [2.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    e = math.e
    s0 = [(1 / (1 + e**10) + 2 * e**2 / (e**2 + 1)) / 3, (e**10 / (1 + e**10) + 2 / (e**2 + 1)) / 3]
    soft = average_views(logits, 3, "softmax")
    torch.testing.assert_close(soft[0], torch.tensor(s0))
    torch.testing.assert_close(soft[1], torch.tensor([e / (e + 1), 1 / (e + 1)]))
    mean_logits = average_views(logits, 3, "logits")
    torch.testing.assert_close(mean_logits, torch.tensor([[4 / 3, 10 / 3], [1.0, 0.0]]))
    # the two rules disagree on video 0: two confident views outvote one extreme one only
    # when probabilities are averaged
    assert soft[0].argmax() == 0 and mean_logits[0].argmax() == 1
