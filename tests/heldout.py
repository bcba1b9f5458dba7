"""The seeds the science checks run on, held out from every model's training and choice.

docs/world.md, section "Seeds", is the record: which seeds trained, tested during development or chose
a model (the zoo's data, world-seg's and world-gan's data, the demo's probe 2017, the latent seeds 1-3
the bundled generator was picked on, the `synth --split` defaults), and the block 7001-7099 that only
the science checks use.  Nobody trains, tunes, chooses a model or writes docs figures on these seeds;
a check that fails on them is reported as a failure (a strict xfail with the measured numbers), not
tuned until it passes.  tests/test_heldout_seeds.py checks the record against the models' recipes.
"""

PROBE_SEED = 7001        # world probe sets: test_emergence, test_experiments_world, test_segment_science
ROLES_TRAIN_SEED = 7002  # test_roles_science: the train split (`synth --split train --seed`)
ROLES_VAL_SEED = 7003    # ... and the val split
TRUST_PROBE_SEED = 7004  # test_trust_science: the probe set of the scorecard check
GAN_DISSECT_SEED = 7011  # test_gan_science: latent samples of the dissection that picks the concept
GAN_REMOVE_SEED = 7012   # ... of the removal
GAN_INSERT_SEED = 7013   # ... of the insertion
GAN_CONTROL_SEED = 7014  # ... the draw of the 20 random control units
ROTATION_SEEDS = [7021, 7022]  # test_experiments_world: the seeds of the random rotations Q

HELDOUT = {PROBE_SEED, ROLES_TRAIN_SEED, ROLES_VAL_SEED, TRUST_PROBE_SEED, GAN_DISSECT_SEED, GAN_REMOVE_SEED, GAN_INSERT_SEED,
           GAN_CONTROL_SEED, *ROTATION_SEEDS}

# seeds that trained, evaluated during development or chose a model, besides the recipes' own (read from
# the zoo registry and the bundled weights by the test): the demo's probe and second set, the latent
# seeds of the demo and docs (the bundled generator was chosen on 1-3), the rotation seeds of the docs
# and of the earlier check (1-3), `synth --split`'s defaults, world-gan's card (22, 23) and fixed z
USED = {2017, 2018, 1, 2, 3, 3001, 3002, 21, 22, 23, 12345, 997}
