"""Arguments shared by several commands."""


def add_model_args(p) -> None:
    p.add_argument("--model", required=True,
                   help="torchvision:NAME | zoo:NAME | path/to/file.py:factory | package.module:factory")
    p.add_argument("--weights", default=None,
                   help="torchvision: DEFAULT (download), none (random), or a PATH; others: a PATH to load")
    p.add_argument("--normalize", default=None,
                   help="imagenet | none | MEAN,STD (default: the weights' own for torchvision, else none)")
