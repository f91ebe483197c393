"""`zoo predict`: classes and probabilities from a pretrained model."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    predict = arguments.command(
        commands, "predict", summary="classes and probabilities from a pretrained model",
        description="Predict with a pretrained model: for each example in the file, the most "
        "likely class and the top classes with their probabilities. Raw inputs, as the "
        "dataset stores them: standardization is inside the model.",
        examples=["zoo predict mnist1d/cnn inputs.npy   # shape (40,), (40, 1) or (N, 40)",
                  "zoo predict digits/cnn digit.png     # any image, made 8x8 grayscale",
                  "zoo predict digits/mlp inputs.npy --top 1"])
    predict.add_argument("name", help="a pretrained model (zoo list pretrained)")
    predict.add_argument("file", help="a .npy array (one example or a batch), or an image file "
                         "for image models")
    predict.add_argument("--top", type=int, default=3,
                         help="classes shown per example (default: 3)")
    predict.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.pretrained.predict import predict

    for i, row in enumerate(predict(args.name, args.file, top=args.top)):
        ranked = "  ".join(f"{label} {p:.3f}" for label, p in row)
        print(f"{i}: {row[0][0]}   ({ranked})")
    return 0
