"""What a booting node is handed: iPXE scripts and its cloud-init NoCloud seed.

The flow, like MAAS and Ironic's iPXE boot: dnsmasq gives firmware an iPXE
binary; iPXE is sent to ``boot.ipxe`` (one script for all machines), which
chains to ``/boot/<mac>/<uuid>``; cloudplan answers with that node's script
(installer kernel, initrd and command line from the inventory's
:class:`BootSpec`, plus ``ds=nocloud;s=<seed url>``). cloud-init's NoCloud
datasource then fetches ``user-data``, ``meta-data`` and ``vendor-data`` from
the seed URL, and its ``phone_home`` module POSTs the node's SSH host keys back
to a URL that carries a per-boot token.

Everything here is pure rendering; :mod:`cloudplan.provision.bootserver`
serves it.
"""

from __future__ import annotations

import re
from pathlib import Path

from cloudplan.errors import ProvisioningFailed, SpecError
from cloudplan.inventory import BootSpec, Node
from cloudplan.templating import render

# cloud-init's phone_home retries this many times (it fails the module after that).
PHONE_HOME_TRIES = 10
# The phone-home URL passes through cloud-init's ``$VAR`` templater, and iPXE
# and the HTTP path see it too: keep tokens to URL-safe characters.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
# Characters a client-supplied MAC/UUID may show in an iPXE script we send back.
_IDENT_SAFE = re.compile(r"[^0-9A-Fa-f:-]")


def seed_url(base_url: str, name: str) -> str:
    """NoCloud seed directory for ``name``; cloud-init appends ``user-data`` etc."""
    return f"{base_url}/nocloud/{name}/"


def phone_home_url(base_url: str, name: str, token: str) -> str:
    return f"{base_url}/phone-home/{name}/{token}"


def nocloud_kernel_arg(base_url: str, name: str) -> str:
    """Kernel argument that points cloud-init's NoCloud datasource at the seed.

    ``s=`` (seedfrom) over http makes NoCloud fetch the seed from the network.
    """
    return f"ds=nocloud;s={seed_url(base_url, name)}"


def check_token(token: str, *, node: str) -> None:
    """Refuse tokens that would not survive a URL; the message never shows the token."""
    if not TOKEN_RE.match(token):
        raise ProvisioningFailed("phone-home token must be 16-256 characters of A-Z a-z 0-9 _ - "
                                 "(for example secrets.token_urlsafe())", node=node, step="register")


def _one_word(value: str, what: str, node: str) -> str:
    # An iPXE command line splits on whitespace: a URL with a space would shift every argument.
    if not value or any(c.isspace() for c in value):
        raise ProvisioningFailed(f"boot.{what} must be a single URL without spaces", node=node, step="ipxe")
    return value


def render_chain_script(base_url: str) -> str:
    """The iPXE script every machine gets first (the DHCP boot filename for iPXE)."""
    return render("pxe/chain.ipxe.j2", {"base_url": base_url}, error=ProvisioningFailed, step="ipxe")


def render_node_script(node: Node, boot: BootSpec, base_url: str) -> str:
    """The iPXE script that boots ``node``'s installer with its NoCloud seed."""
    cmdline = " ".join(x for x in (boot.cmdline.strip(), nocloud_kernel_arg(base_url, node.name)) if x)
    ctx = {
        "name": node.name,
        "boot_mode": node.boot_mode.value,
        "kernel": _one_word(boot.kernel, "kernel", node.name),
        "initrd": _one_word(boot.initrd, "initrd", node.name),
        "cmdline": cmdline.replace("\n", " "),
        "seed_url": seed_url(base_url, node.name),
    }
    return render("pxe/node.ipxe.j2", ctx, error=ProvisioningFailed, node=node.name, step="ipxe")


def render_deploy_script(node: Node, kernel: str, initrd: str, cmdline: str, seed_url: str) -> str:
    """The iPXE script that boots ``node``'s deploy ramdisk with its deploy arguments."""
    ctx = {"name": node.name, "boot_mode": node.boot_mode.value, "kernel": _one_word(kernel, "kernel", node.name),
           "initrd": _one_word(initrd, "initrd", node.name), "cmdline": cmdline.replace("\n", " "),
           "seed_url": seed_url}
    return render("pxe/node.ipxe.j2", ctx, error=ProvisioningFailed, node=node.name, step="ipxe")


def render_unknown_script(mac: str | None, uuid: str | None, reason: str) -> str:
    """Script for a machine no node is registered for: say so and leave network boot."""
    def clean(v: str | None) -> str:
        return _IDENT_SAFE.sub("", v)[:64] if v else "-"

    return render("pxe/unknown.ipxe.j2", {"mac": clean(mac), "uuid": clean(uuid), "reason": reason},
                  error=ProvisioningFailed, step="ipxe")


def render_user_data(name: str, *, phone_home: str, ssh_authorized_keys: list[str],
                     tries: int = PHONE_HOME_TRIES) -> str:
    """``#cloud-config`` user-data: hostname, authorized keys, phone_home with host keys."""
    ctx = {"name": name, "phone_home_url": phone_home, "ssh_authorized_keys": ssh_authorized_keys,
           "phone_home_tries": tries}
    return render("pxe/user-data.j2", ctx, error=ProvisioningFailed, node=name, step="user-data")


def render_meta_data(name: str, instance_id: str) -> str:
    """NoCloud meta-data; a new ``instance-id`` makes cloud-init run its first-boot modules again."""
    return render("pxe/meta-data.j2", {"name": name, "instance_id": instance_id},
                  error=ProvisioningFailed, node=name, step="meta-data")


def render_vendor_data() -> str:
    return render("pxe/vendor-data.j2", {}, error=ProvisioningFailed, step="vendor-data")


def read_public_keys(path: str | Path) -> list[str]:
    """The ``ssh-... AAAA...`` lines of an OpenSSH public key (or authorized_keys) file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"cannot read SSH public key: {err.strerror}", path=str(p),
                        field="provisioning.ssh_public_key_file") from None
    keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not keys or any(len(k.split()) < 2 for k in keys):
        raise SpecError("not an OpenSSH public key file (expected 'TYPE BASE64 [comment]' lines)",
                        path=str(p), field="provisioning.ssh_public_key_file")
    return keys
