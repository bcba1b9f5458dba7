"""The CVPR 2017 experiments as functions (and ``netdissect experiment`` commands).

- :mod:`.rotation`: uniformly random rotations of SO(C) and their fractional powers Q^alpha.
- :mod:`.basis`: dissect a layer in any linear basis of its channels (random rotation, PCA, ICA,
  a user's matrix) from ONE forward pass: the directions are applied to the cached activations.
- :mod:`.sweep`: the rotation sweep (unique detectors vs alpha, several seeds): ``rotation.csv``.
- :mod:`.training`: unique detectors along training snapshots and across model variants.
- :mod:`.probe`: discrimination vs interpretability (a linear probe on pooled features).
"""
