"""Training targets (Gaussian heatmaps, regression slots) and the multi-task loss."""

import math

from bev_perception.model.config import HeadConfig, ModelConfig
from bev_perception.model.decode import regression_to_boxes
from bev_perception.model.network import NetworkOutput
from bev_perception.model.voxelizer import VoxelizerCounts
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from training.losses import (
    heatmap_focal_loss, LossWeights, LOVASZ_PIXEL_STRIDE, lovasz_softmax_loss, MAX_CLASS_WEIGHT,
    multitask_loss, regression_loss, semantic_class_weights, semantic_loss)
from training.targets import (build_targets, collate_targets, gaussian_radius, points_in_boxes,
                              TargetConfig)

CONFIG = ModelConfig.tiny()  # head grid 14 x 16 cells of 0.64 m, origin (0, -4.16)
BOXES = np.array([[2.0, -2.0, -1.0, 4.0, 1.8, 1.5, 0.3],
                  [7.0, 2.0, -0.8, 0.6, 0.6, 1.7, -3.0]], dtype=np.float32)
LABELS = np.array([0, 2])


def test_gaussian_radius_matches_the_cornernet_formula():
    radius = gaussian_radius(torch.tensor([10.0]), torch.tensor([10.0]), 0.1)
    assert float(radius) == pytest.approx(4.3246, abs=1e-3)
    small, large = gaussian_radius(torch.tensor([1.0, 8.0]), torch.tensor([1.0, 3.0]), 0.1)
    assert 0 < small < large


def test_heatmap_peaks_at_centres_with_minimum_radius():
    targets = build_targets(BOXES, LABELS, CONFIG)
    assert targets.heatmap.shape == (4, 14, 16)
    cols = CONFIG.head_hw[1]
    for slot, label in enumerate(LABELS):
        cell = int(targets.cell_index[slot])
        row, col = divmod(cell, cols)
        assert float(targets.heatmap[label, row, col]) == 1.0
        assert float(targets.heatmap[label].max()) == 1.0
    assert targets.heatmap[1].sum() == 0 and targets.heatmap[3].sum() == 0
    # The 0.6 m pedestrian gets the minimum radius 2: non-zero 2 cells away, zero at 3.
    row, col = divmod(int(targets.cell_index[1]), cols)
    sigma = (2 * 2 + 1) / 6
    expected = math.exp(-4 / (2 * sigma ** 2))
    assert float(targets.heatmap[2, row, col - 2]) == pytest.approx(expected)
    assert float(targets.heatmap[2, row, col - 3]) == 0.0
    assert int((targets.heatmap == 1.0).sum()) == 2


def test_objects_with_few_points_become_ignore_regions():
    rng = np.random.default_rng(0)

    def inside(box, count):
        offsets = rng.uniform(-0.4, 0.4, (count, 3)) * box[3:6]  # in the box's own axes
        c, s = math.cos(box[6]), math.sin(box[6])
        return box[:3] + offsets @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])

    car_points, person_points = inside(BOXES[0], 40), inside(BOXES[1], 6)
    far = np.array([[30.0, 20.0, 0.0]])
    counts = points_in_boxes(np.concatenate([car_points, person_points, far]), BOXES)
    assert counts.tolist() == [40, 6]
    config = TargetConfig(min_points=10)
    targets = build_targets(BOXES, LABELS, CONFIG, config, counts)
    assert int(targets.mask.sum()) == 1 and int(targets.labels[0]) == 0  # the car only
    assert targets.heatmap[2].sum() == 0  # the person is no positive ...
    row, col = divmod(int(build_targets(BOXES, LABELS, CONFIG).cell_index[1]), CONFIG.head_hw[1])
    assert targets.ignore[row, col] and targets.ignore[row, col - 2]  # ... nor a negative
    assert not targets.ignore[row, col - 3] and int(targets.ignore.sum()) == 25
    assert not build_targets(BOXES, LABELS, CONFIG).ignore.any()
    with pytest.raises(ValueError, match='points inside each box'):
        build_targets(BOXES, LABELS, CONFIG, config)
    # The heatmap loss does not punish a confident guess inside the ignore region.
    batch = collate_targets([targets])
    logits = torch.full((1, 4, 14, 16), -6.0)
    logits[0, 2, row, col] = 4.0
    with_region = heatmap_focal_loss(logits, batch.heatmap, ignore=batch.ignore)
    without = heatmap_focal_loss(logits, batch.heatmap)
    assert float(with_region) < float(without) - 1.0


def test_regression_slots_decode_back_to_the_boxes():
    targets = build_targets(torch.from_numpy(BOXES), torch.from_numpy(LABELS), CONFIG)
    assert targets.mask.tolist()[:3] == [True, True, False]
    assert targets.mask.shape == (CONFIG.head.max_objects,)
    assert targets.labels[:2].tolist() == [0, 2]
    decoded = regression_to_boxes(targets.cell_index[:2], targets.offset[:2], targets.z[:2],
                                  targets.log_size[:2], targets.yaw[:2], CONFIG)
    torch.testing.assert_close(decoded, torch.from_numpy(BOXES), atol=1e-5, rtol=0)


def test_unusable_boxes_are_skipped_and_slots_are_capped():
    boxes = np.concatenate([BOXES, [[-5.0, 0, 0, 1, 1, 1, 0], [3.0, 0, 0, 0, 1, 1, 0],
                                    [3.0, 0, 0, 1, 1, 1, 0]]]).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 7])  # off-grid, zero length, unknown class
    targets = build_targets(boxes, labels, CONFIG)
    assert int(targets.mask.sum()) == 2 and targets.heatmap[1].sum() == 0
    config = ModelConfig.tiny()
    config = ModelConfig(grid=config.grid, camera=config.camera,
                         lidar_encoder=config.lidar_encoder,
                         camera_encoder=config.camera_encoder, fusion=config.fusion,
                         head=HeadConfig(max_objects=1))
    capped = build_targets(BOXES, LABELS, config)
    assert capped.mask.tolist() == [True]
    assert int((capped.heatmap == 1.0).sum()) == 2  # both still drawn
    empty = build_targets(np.zeros((0, 7)), np.zeros(0), CONFIG, TargetConfig())
    assert empty.heatmap.sum() == 0 and not empty.mask.any()


def test_collate_adds_a_batch_dimension():
    batch = collate_targets([build_targets(BOXES, LABELS, CONFIG),
                             build_targets(BOXES[:1], LABELS[:1], CONFIG)])
    assert batch.heatmap.shape == (2, 4, 14, 16)
    assert batch.offset.shape == (2, CONFIG.head.max_objects, 2)
    assert batch.mask.sum(1).tolist() == [2, 1]


def test_without_footprints_every_slot_is_an_object_centre_of_weight_one():
    targets = build_targets(BOXES, LABELS, CONFIG)
    assert targets.weight.shape == (CONFIG.head.max_objects,)
    torch.testing.assert_close(targets.weight, targets.mask.float())
    with pytest.raises(ValueError, match='footprint_regression'):
        TargetConfig(footprint_regression=-1.0)
    with pytest.raises(ValueError, match='footprint_slots'):
        TargetConfig(footprint_slots=0)


def _decoded(targets, slots):
    """Return the boxes (S, 7) that the targets' slots decode to."""
    return regression_to_boxes(targets.cell_index[slots], targets.offset[slots],
                               targets.z[slots], targets.log_size[slots], targets.yaw[slots],
                               CONFIG)


def _cell_centres(z):
    """Return the centres (h * w, 3) of the head cells, in cell-index order, at height z."""
    rows, cols = CONFIG.head_hw
    cell = CONFIG.head_cell_size_m
    row, col = np.divmod(np.arange(rows * cols), cols)
    return np.stack([CONFIG.grid.x_range_m[0] + (col + 0.5) * cell,
                     CONFIG.grid.y_range_m[0] + (row + 0.5) * cell,
                     np.full(rows * cols, z)], 1)


def test_footprint_regression_teaches_the_box_at_every_cell_inside_it():
    footprint = TargetConfig(footprint_regression=0.2, footprint_slots=200)
    targets = build_targets(BOXES, LABELS, CONFIG, footprint)
    centres = CONFIG.head.max_objects
    assert targets.weight.shape == (centres + 200,)
    plain = build_targets(BOXES, LABELS, CONFIG)
    for name in ('cell_index', 'offset', 'z', 'log_size', 'yaw', 'labels', 'mask'):
        torch.testing.assert_close(getattr(targets, name)[:centres], getattr(plain, name))
    extra = torch.nonzero(targets.weight[centres:] > 0).squeeze(1) + centres
    # The cells whose centres lie inside the car's box, its centre cell aside; none for the
    # 0.6 m person (the 0.64 m cells hold only its centre).
    inside = [index for index, point in enumerate(_cell_centres(BOXES[0, 2]))
              if points_in_boxes(point[None], BOXES[:1])[0]]
    assert len(inside) >= 10 and int(plain.cell_index[0]) in inside
    assert sorted(targets.cell_index[extra].tolist()) == sorted(
        set(inside) - {int(plain.cell_index[0])})
    assert not targets.mask[extra].any() and (targets.labels[extra] == 0).all()
    torch.testing.assert_close(targets.weight[extra], torch.full((len(extra),), 0.2))
    boxes = _decoded(targets, extra)  # every entry gives the car's box back
    torch.testing.assert_close(boxes[:, :6], torch.as_tensor(BOXES[:1, :6]).expand(
        len(extra), 6), atol=1e-4, rtol=0)
    assert np.allclose(np.cos(boxes[:, 6].numpy() - BOXES[0, 6]), 1.0)


def test_a_cell_inside_two_boxes_teaches_the_nearer_centre_and_the_slots_cap():
    two = np.array([[4.0, 0.0, -1.0, 4.0, 1.8, 1.5, 0.0], [6.6, 0.2, -1.0, 4.0, 1.8, 1.5, 0.0]],
                   dtype=np.float32)  # overlapping by 1.4 m
    targets = build_targets(two, np.array([0, 0]), CONFIG,
                            TargetConfig(footprint_regression=1.0))
    extra = torch.nonzero(targets.weight > 0).squeeze(1)[2:]
    cells = targets.cell_index[extra]
    assert cells.unique().numel() == cells.numel()
    points = _cell_centres(-1.0)[cells.numpy()]
    in_first, in_second = ([points_in_boxes(point[None], box[None])[0] > 0 for point in points]
                           for box in two)
    assert np.logical_or(in_first, in_second).all()
    assert np.logical_and(in_first, in_second).sum() >= 2  # the overlap holds cells
    decoded = _decoded(targets, extra).numpy()
    for point, box in zip(points, decoded):
        nearer = min(two, key=lambda b: np.hypot(*(b[:2] - point[:2])))
        assert np.allclose(box[:2], nearer[:2], atol=1e-4)
    capped = build_targets(two, np.array([0, 0]), CONFIG,
                           TargetConfig(footprint_regression=1.0, footprint_slots=4))
    kept = capped.cell_index[CONFIG.head.max_objects:][capped.weight[
        CONFIG.head.max_objects:] > 0]
    assert kept.numel() == 4  # the cells nearest to their centres
    distance = {int(c): float(np.hypot(*(_cell_centres(-1.0)[int(c), :2] - b[:2])))
                for c, b in zip(cells, decoded)}
    assert max(distance[int(c)] for c in kept) <= min(
        d for c, d in distance.items() if c not in kept.tolist()) + 1e-6  # ties: either


def test_footprint_slots_count_in_the_regression_loss_with_their_weight():
    footprint = TargetConfig(footprint_regression=0.5)
    targets = collate_targets([build_targets(BOXES, LABELS, CONFIG, footprint)])
    output = _output_from_targets(targets)
    assert float(regression_loss(output, targets, LossWeights()).detach()) == pytest.approx(
        0, abs=1e-6)
    shifted = output._replace(z=output.z + 0.5)
    # Every slot is off by 0.5 on z: the weights' sum * 0.5, over the 2 objects.
    expected = 0.5 * float(targets.weight.sum()) / 2
    assert expected > 0.5
    assert float(regression_loss(shifted, targets, LossWeights()).detach()) == pytest.approx(
        expected, rel=1e-5)


def _output_from_targets(targets, semantic=None, camera_valid=None):
    """Return a NetworkOutput that predicts the targets' regression exactly."""
    batch = targets.heatmap.shape[0]
    rows, cols = CONFIG.head_hw
    maps = {}
    for name, channels in (('offset', 2), ('z', 1), ('log_size', 3), ('yaw', 2)):
        flat = torch.zeros(batch, channels, rows * cols)
        for b in range(batch):
            slots = targets.weight[b] > 0
            flat[b][:, targets.cell_index[b][slots]] = getattr(targets, name)[b][slots].T
        maps[name] = flat.view(batch, channels, rows, cols).requires_grad_()
    zeros = torch.zeros(batch, dtype=torch.int64)
    return NetworkOutput(
        heatmap=torch.zeros_like(targets.heatmap, requires_grad=True), semantic=semantic,
        camera_valid=torch.ones(batch, dtype=torch.bool) if camera_valid is None
        else camera_valid, counts=VoxelizerCounts(zeros, zeros, zeros, zeros), **maps)


def test_regression_loss_is_zero_for_exact_predictions_and_grows_with_error():
    targets = collate_targets([build_targets(BOXES, LABELS, CONFIG)])
    output = _output_from_targets(targets)
    exact = regression_loss(output, targets, LossWeights())
    assert float(exact.detach()) == pytest.approx(0, abs=1e-6)
    shifted = output._replace(z=output.z + 0.5)
    # Mean over the 2 objects of |0.5| on the z channel.
    assert float(regression_loss(shifted, targets, LossWeights()).detach()) == pytest.approx(0.5)
    doubled = regression_loss(shifted, targets, LossWeights(z=2.0))
    assert float(doubled.detach()) == pytest.approx(1.0)


def test_focal_loss_rewards_confident_correct_heatmaps():
    targets = collate_targets([build_targets(BOXES, LABELS, CONFIG)]).heatmap
    good = torch.where(targets >= 1, torch.full_like(targets, 8.0), torch.full_like(targets, -8.0))
    bad = -good
    uniform = torch.full_like(targets, -2.19)
    losses = [float(heatmap_focal_loss(x, targets)) for x in (good, uniform, bad)]
    assert losses[0] < 1e-3 < losses[1] < losses[2]
    assert math.isfinite(float(heatmap_focal_loss(torch.full_like(targets, 100.0), targets)))
    assert float(heatmap_focal_loss(torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 3, 3))) > 0


def test_balanced_semantic_loss_weighs_rare_classes_up():
    labels = torch.zeros(1, 10, 10, dtype=torch.int64)  # road everywhere ...
    labels[0, 0, :4] = 2  # ... but a thin pole
    labels[0, 9, :] = 255
    weights = semantic_class_weights(labels, 4, 0.5)
    counts = torch.tensor([86.0, 0.0, 4.0, 0.0])
    torch.testing.assert_close((weights * counts).sum(), counts.sum())  # pixel mean 1
    assert weights[1] == 0 and weights[3] == 0 and weights[2] > 4 * weights[0]
    assert float(semantic_class_weights(labels, 4, 3.0).max()) == MAX_CLASS_WEIGHT
    # A model that calls the pole road costs more with balance than without.
    logits = torch.zeros(1, 4, 10, 10)
    logits[:, 0] = 3.0
    valid = torch.ones(1, dtype=torch.bool)
    assert float(semantic_loss(logits, labels, valid, 0.5)) > float(
        semantic_loss(logits, labels, valid)) * 1.5
    torch.testing.assert_close(semantic_loss(logits, labels, valid, 0.0),
                               semantic_loss(logits, labels, valid))


def _mean_jaccard_loss(predicted, labels, classes):
    """1 - IoU averaged over the classes in ``labels`` (255 ignored), counted directly."""
    losses = []
    for category in range(classes):
        truth, called = labels == category, (predicted == category) & (labels != 255)
        if truth.any():
            losses.append(1.0 - float((truth & called).sum()) / float((truth | called).sum()))
    return sum(losses) / len(losses)


def test_lovasz_softmax_is_the_jaccard_loss_on_hard_predictions_and_follows_the_iou():
    generator = torch.Generator().manual_seed(3)
    step = LOVASZ_PIXEL_STRIDE
    labels = torch.randint(0, 4, (2, 6 * step, 5 * step), generator=generator)
    labels[0, :step] = 255  # ignored rows
    predicted = torch.where(torch.rand(labels.shape, generator=generator) < 0.7, labels,
                            torch.randint(0, 4, labels.shape, generator=generator))
    predicted = predicted.clamp_max(3)
    hard = F.one_hot(predicted, 5).permute(0, 3, 1, 2).float() * 200.0  # softmax: exactly 0/1
    expected = _mean_jaccard_loss(predicted[:, ::step, ::step], labels[:, ::step, ::step], 5)
    assert 0.1 < expected < 0.9
    assert float(lovasz_softmax_loss(hard, labels)) == pytest.approx(expected, abs=1e-6)
    assert float(lovasz_softmax_loss(F.one_hot(labels.clamp_max(3), 5).permute(
        0, 3, 1, 2).float() * 200.0, labels)) == pytest.approx(0.0, abs=1e-6)
    # On soft logits its gradient raises each pixel's true-class logit.
    logits = torch.randn(2, 5, *labels.shape[1:], generator=generator, requires_grad=True)
    lovasz_softmax_loss(logits, labels).backward()
    sampled = logits.grad[:, :, ::step, ::step]
    true_grad = sampled.gather(1, labels[:, None, ::step, ::step].clamp_max(4))[:, 0]
    read = labels[:, ::step, ::step] != 255
    assert (true_grad[read] <= 0).all() and (true_grad[read] < 0).any()
    assert not logits.grad[:, :, 1::step].any()  # rows between the samples are not read
    # Added to the cross-entropy by its weight.
    valid = torch.ones(2, dtype=torch.bool)
    torch.testing.assert_close(
        semantic_loss(logits, labels, valid, 0.0, 0.5),
        semantic_loss(logits, labels, valid) + 0.5 * lovasz_softmax_loss(logits, labels))
    assert float(lovasz_softmax_loss(logits.detach(), torch.full_like(labels, 255))) == 0.0


def test_semantic_loss_ignores_255_and_camera_invalid_samples():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=generator)
    labels = torch.randint(0, 5, (2, 4, 6), generator=generator).to(torch.uint8)
    labels[0, 0] = 255
    valid = torch.tensor([True, False])
    loss = semantic_loss(logits, labels, valid)
    expected = F.cross_entropy(logits[:1], labels[:1].long(), ignore_index=255)
    torch.testing.assert_close(loss, expected)
    other = labels.clone()
    other[1] = (other[1] + 1) % 5
    torch.testing.assert_close(semantic_loss(logits, other, valid), loss)
    assert float(semantic_loss(logits, labels, torch.zeros(2, dtype=torch.bool))) == 0.0
    assert float(semantic_loss(None, labels, valid)) == 0.0
    with pytest.raises(ValueError, match='resize'):
        semantic_loss(logits, labels[:, :2], valid)


def test_multitask_loss_weights_and_breakdown():
    targets = collate_targets([build_targets(BOXES, LABELS, CONFIG)] * 2)
    semantic = torch.randn(2, 5, 4, 6, requires_grad=True)
    labels = torch.randint(0, 5, (2, 4, 6))
    output = _output_from_targets(targets, semantic, torch.tensor([True, True]))
    z_leaf = output.z
    output = output._replace(z=z_leaf + 0.5)
    parts = multitask_loss(output, targets, labels)
    weights = LossWeights(heatmap=2.0, regression=3.0, semantic=0.5)
    weighted = multitask_loss(output, targets, labels, weights)
    torch.testing.assert_close(
        weighted.total, 2.0 * parts.heatmap + 3.0 * parts.regression + 0.5 * parts.semantic)
    torch.testing.assert_close(
        parts.total, parts.heatmap + 0.25 * parts.regression + parts.semantic)
    weighted.total.backward()
    assert semantic.grad.abs().sum() > 0 and z_leaf.grad.abs().sum() > 0
    no_camera = multitask_loss(output._replace(semantic=None), targets, None)
    assert float(no_camera.semantic.detach()) == 0.0
