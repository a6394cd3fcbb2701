"""`cloudplan image build`: a deployable OS image from distribution packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from cloudplan.commands import err, out
from cloudplan.images import DEFAULT_SUITE, build_image
from cloudplan.images.debian import DEFAULT_SIZE_GIB, SUITES

image_app = typer.Typer(help="Deployable OS images.", no_args_is_help=True)


@image_app.command("build")
def build(
    output: Path = typer.Option(None, "-o", "--output", help="Copy the raw image here (default: leave it in the "
                                                            "cache and print its path)."),
    suite: str = typer.Option(DEFAULT_SUITE, "--suite", help=f"Debian suite: {', '.join(SUITES)}."),
    size_gib: int = typer.Option(DEFAULT_SIZE_GIB, "--size-gib", help="Image size; cloud-init grows the root "
                                                                      "to the node's disk on first boot."),
    cache: Path = typer.Option(Path(".cache/os-image"), "--cache", help="Where builds and their inputs' stamps are "
                                                                         "kept; an unchanged build is reused."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the cached image is up to date."),
) -> None:
    """Build a Debian image (cloud-init, openssh-server, python3, netplan, GRUB for legacy BIOS and
    UEFI) that the deploy step writes to a node's root disk. Needs root (loop devices, mount).

    Example: sudo cloudplan image build -o debian-12.raw
    """
    err.print(f"building the {suite} image (the first build takes a few minutes)", markup=False,
              highlight=False)
    img = build_image(cache, suite=suite, size_gib=size_gib, force=force)
    path = img.path
    if output is not None:
        shutil.copyfile(img.path, output)
        path = output
    out.print(f"{path}  sha256:{img.sha256}  kernel {img.kernel_version}  {img.size_bytes >> 20} MiB",
              markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
