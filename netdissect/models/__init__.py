"""Models users point netdissect at: ``torchvision:NAME``, ``file.py:factory``,
``package.module:factory`` and the bundled ``zoo:NAME``.

    >>> from netdissect.models import load_model
    >>> model, prep = load_model("torchvision:resnet18", weights="none")
    >>> prep.mean, prep.std
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

For the engine: :func:`preserved` leaves a user's module as it was found,
:func:`describe_weights` names what was loaded, :func:`explain_forward` /
:func:`forward_error` turn a failing first forward pass into one line.
"""
from netdissect.models.forward import explain_forward, forward_error
from netdissect.models.loading import (
    DEFAULT_SEED,
    NoNormalizationWarning,
    Preprocess,
    check_seed,
    describe_weights,
    load_model,
    load_state_dict,
    model_identity,
    parse_normalize,
    spec_name,
)
from netdissect.models.preserve import preserved

__all__ = ["load_model", "load_state_dict", "parse_normalize", "Preprocess", "describe_weights", "preserved",
           "forward_error", "explain_forward", "NoNormalizationWarning", "DEFAULT_SEED", "check_seed",
           "model_identity", "spec_name"]
