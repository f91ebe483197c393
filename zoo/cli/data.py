"""`zoo data`: find Fashion-MNIST's IDX files on this machine, or install Debian's package."""

from __future__ import annotations

import os
import shutil
import subprocess

from zoo.cli import arguments

PACKAGE = "dataset-fashion-mnist"


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    data = arguments.command(
        commands, "data", summary="find or install Fashion-MNIST's files",
        description="Say where Fashion-MNIST's four IDX files are found (ZOO_FASHION_MNIST_DIR, "
        f"Keras' cache, then /usr/share/datasets/fashion-mnist) and check them. Where they are "
        f"nowhere, install Debian's {PACKAGE} with apt-get when this is a Debian machine and "
        "the command runs as root; otherwise print how to get them and exit 2. Nothing is "
        "downloaded from anywhere but the system's package archive.",
        examples=["zoo data", "ZOO_FASHION_MNIST_DIR=~/fashion-mnist zoo data"])
    data.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.data import fashion_mnist as source
    from zoo.errors import DataError

    try:
        folder = source.find_files()
    except DataError:
        if os.environ.get(source.DIR_ENVIRONMENT) or not _can_install():
            raise
        print(f"zoo: installing Debian's {PACKAGE} (apt-get)", flush=True)
        _apt_install()
        folder = source.find_files()
    x_train, _, x_test, _, class_names = source.fashion_mnist()  # checks the sha256
    print(f"fashion_mnist: {len(x_train):,} training and {len(x_test):,} test images, "
          f"{len(class_names)} classes, files in {folder} (sha256 checked)")
    return 0


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install() -> None:
    from zoo.errors import DataError

    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", PACKAGE]
    if subprocess.run(install, env=environment, capture_output=True).returncode != 0:
        # A fresh machine's package lists may not know the package yet.
        subprocess.run(["apt-get", "update", "-q"], env=environment, capture_output=True)
        done = subprocess.run(install, env=environment, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"fashion_mnist: apt-get install {PACKAGE} failed ({last}); "
                            "install it by hand, or copy the four IDX files into a folder "
                            "and set ZOO_FASHION_MNIST_DIR")
