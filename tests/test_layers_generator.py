"""`netdissect layers` on a generator feeds it one latent z, not an image."""
from netdissect.cli import main


def test_layers_of_the_bundled_generator(capsys):
    assert main(["layers", "--model", "zoo:world-gan"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "(1, 128, 8, 8)" in rows["layer4"]        # layer4 is 8 x 8, as in the PNAS generators
    assert "(1, 3, 64, 64)" in rows["output_64x64"]
