"""Tests of training.averaging: the exponential moving average of the weights."""

import pytest
import torch
from torch import nn
from training.averaging import WeightAverage


def _network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _step(model, scale):
    """Move every parameter and BatchNorm statistic as a training step would."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale)
        model.train()(torch.randn(8, 3))  # running statistics and the batch count move


def test_the_average_follows_the_formula_with_its_ramp():
    model = _network()
    average = WeightAverage(model, decay=0.9)
    assert [average.decay_at(n) for n in (0, 1, 100)] == pytest.approx([0.1, 2 / 11, 0.9])
    expected = {name: value.clone() for name, value in model.state_dict().items()
                if value.is_floating_point()}
    for index in range(30):
        _step(model, 0.01 * (index + 1))
        weight = 1.0 - average.decay_at(index)
        for name, value in model.state_dict().items():
            if name in expected:
                expected[name] += weight * (value - expected[name])
        average.update(model)
    assert average.updates == 30
    averaged = average.state_dict(model)
    assert averaged.keys() == model.state_dict().keys()
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-6, atol=1e-6)
        assert not torch.equal(averaged[name], model.state_dict()[name]), name  # it lags
    # The batch count is an integer: taken from the network, never averaged.
    count = '1.num_batches_tracked'
    assert torch.equal(averaged[count], model.state_dict()[count])


def test_frozen_modules_are_copied_bit_for_bit():
    model = _network()
    average = WeightAverage(model, decay=0.99, frozen=('1',))
    assert not any(name.startswith('1.') for name in average.average)
    for index in range(5):
        _step(model, 0.1)
        average.update(model)
    averaged = average.state_dict(model)
    for name, value in model.state_dict().items():
        if name.startswith('1.'):  # even statistics that moved: the network's own values
            assert torch.equal(averaged[name], value), name
    assert not torch.equal(averaged['0.weight'], model.state_dict()['0.weight'])


def test_parameters_that_do_not_train_are_not_averaged():
    model = _network()
    model[2].bias.requires_grad_(False)
    average = WeightAverage(model, decay=0.9)
    assert '2.bias' not in average.average and '2.weight' in average.average
    assert '1.running_mean' in average.average  # buffers of a module that trains are


def test_a_restored_average_continues_as_the_original():
    model = _network()
    first = WeightAverage(model, decay=0.95)
    for _ in range(4):
        _step(model, 0.05)
        first.update(model)
    second = WeightAverage(model, decay=0.95)
    second.load(first.state_dict(model), first.updates)
    _step(model, 0.05)
    first.update(model)
    second.update(model)
    for name, value in first.state_dict(model).items():
        assert torch.equal(value, second.state_dict(model)[name]), name
    with pytest.raises(ValueError, match='lacks'):
        second.load({}, 3)


@pytest.mark.parametrize('decay', [0.0, 1.0, -0.5])
def test_a_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match='must be in'):
        WeightAverage(_network(), decay=decay)
