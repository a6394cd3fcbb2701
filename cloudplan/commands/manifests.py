"""`cloudplan manifests`: Kolla-Ansible deployment files and cephadm specs from the inventory."""

from __future__ import annotations

from pathlib import Path

import typer

from cloudplan.commands import err, out
from cloudplan.manifests import DEFAULT_RELEASE, render_manifests, supported_releases


def manifests(
    inventory: Path = typer.Argument(..., help="Site inventory (from `cloudplan layout` or written by hand)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the files to."),
    release: str = typer.Option(DEFAULT_RELEASE, "--release",
                                help=f"OpenStack release: {', '.join(supported_releases())}."),
    blueprint: Path | None = typer.Option(None, "--blueprint", help="Blueprint YAML (its name and storage tiers)."),
    overrides: Path | None = typer.Option(None, "--overrides",
                                          help="YAML of Kolla-Ansible variables merged on top of globals.yml."),
) -> None:
    """Write Kolla-Ansible's multinode, globals.yml, passwords.yml and config/, and cephadm specs under ceph/.

    The inventory's control_plane section names the image registry (or
    test_images: true for a lab), VIPs, TLS and Magnum options. After the Ceph
    cluster is up, ceph/kolla-config.sh writes its ceph.conf and keyrings
    into config/ for Kolla-Ansible.

    passwords.yml (mode 0600) keeps its values when run again and only gains
    missing keys; its values are never printed.

    Example: cloudplan manifests examples/inventory.yaml -o deploy/ --release 2026.2
    """
    result = render_manifests(inventory, output, release=release, blueprint=blueprint, overrides=overrides)
    for w in result.warnings:
        err.print(f"Warning: {w}", markup=False, highlight=False)
    for p in result.paths:
        out.print(str(p), markup=False, highlight=False)
    out.print(f"OpenStack {result.release}: {len(result.paths)} files, "
              f"{result.passwords_added} new password(s)", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("manifests")(manifests)
