"""Fold eval-mode BatchNorms into the convolutions they follow, for inference only.

In eval mode a BatchNorm2d is a fixed affine map per channel c,

    y_c = gamma_c * (x_c - mean_c) / sqrt(var_c + eps) + beta_c,

so straight after a convolution it can be absorbed into that convolution: filter c is scaled
by s_c = gamma_c / sqrt(var_c + eps) and the bias becomes (bias_c - mean_c) * s_c + beta_c (a
convolution without a bias gets one). The network then computes the same, up to float
rounding, without the BatchNorm's pass over each feature map (a read and a write of the whole
map per layer); the bias add happens inside the convolution.

Only a BatchNorm applied directly to its convolution's output is folded. In this network:

* ``nn.Sequential`` conv -> BatchNorm pairs (``conv_bn_relu`` blocks, shortcut projections),
  except the camera encoder's stem when it has a style normalisation: its forward calls the
  stem's layers one by one with ``stem_norm`` between the conv and the BatchNorm;
* ``BasicBlock``'s conv1 -> bn1 (only when ``norm1`` is the identity) and conv2 -> bn2.

An instance normalisation between a conv and its BatchNorm (``instance_norm_levels``)
re-normalises the conv's output per image, so that BatchNorm stays. The pillar net's
BatchNorm1d is not folded either: it runs on pooled pillar features only, and its eval path
reads the sign of its weight.

The running statistics are gone afterwards and the state dict changes (conv biases instead of
BatchNorm tensors): fold only a model that will run inference and nothing else, never one that
trains further or is saved as weights.
"""

from typing import List, Tuple

from bev_perception.model.camera_encoder import BasicBlock, CameraEncoder
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: (parent module, attribute name of the conv, attribute name of the BatchNorm after it).
ConvBatchNormPair = Tuple[nn.Module, str, str]


def _conv_batch_norm_pairs(model: nn.Module) -> List[ConvBatchNormPair]:
    """Return every BatchNorm2d in ``model`` that is applied directly to a Conv2d's output."""
    # Stems whose layers CameraEncoder.forward calls one by one, with a normalisation between.
    split_stems = {id(encoder.stem) for encoder in model.modules()
                   if isinstance(encoder, CameraEncoder)
                   and not isinstance(encoder.stem_norm, nn.Identity)}
    candidates: List[ConvBatchNormPair] = []
    for module in model.modules():
        if isinstance(module, BasicBlock):
            if isinstance(module.norm1, nn.Identity):
                candidates.append((module, 'conv1', 'bn1'))
            candidates.append((module, 'conv2', 'bn2'))
        elif isinstance(module, nn.Sequential) and id(module) not in split_stems:
            names = [name for name, _ in module.named_children()]
            candidates.extend((module, conv, norm) for conv, norm in zip(names, names[1:]))
    return [(parent, conv, norm) for parent, conv, norm in candidates  # not folded yet
            if isinstance(getattr(parent, conv), nn.Conv2d)
            and isinstance(getattr(parent, norm), nn.BatchNorm2d)]


def fold_batch_norms(model: nn.Module) -> int:
    """Fold each BatchNorm2d that follows a Conv2d into it, in place; return how many.

    Each folded conv is replaced by a copy with the BatchNorm's scale in its weights and a
    bias, and the BatchNorm by ``nn.Identity``; every module's forward computes what it did
    (module docstring). A second call finds nothing left to fold and returns 0.

    Args:
        model: a network in eval mode (every submodule), e.g. a ``BEVFusionNet`` that will
            only run inference afterwards: its running statistics are folded away.

    Raises:
        ValueError: ``model`` or one of its submodules is in training mode (a training
            BatchNorm normalises with batch statistics, which no weights can hold).
    """
    if any(module.training for module in model.modules()):
        raise ValueError('fold_batch_norms needs a model in eval mode: call model.eval() first '
                         '(and fold only a model that will not train again)')
    pairs = _conv_batch_norm_pairs(model)
    for parent, conv_name, norm_name in pairs:
        folded = fuse_conv_bn_eval(getattr(parent, conv_name), getattr(parent, norm_name))
        setattr(parent, conv_name, folded)
        setattr(parent, norm_name, nn.Identity().eval())  # the model stays all eval
    return len(pairs)
