"""Labels you can trust: a scorecard on every unit's label (docs/label-trust.md).

- significance: a p-value under an image-permutation null and BH q-values over the layer's tests;
- stability: a bootstrap over the probe images;
- held-out prediction: labels chosen on one part of the probe, scored on the other.
"""
from netdissect.trust.scorecard import (UNIT_COLUMNS, ScorecardError, TooFewImages, holdout_split, score_layers,
                                        scorecard_config)

__all__ = ["UNIT_COLUMNS", "ScorecardError", "TooFewImages", "holdout_split", "score_layers", "scorecard_config"]
