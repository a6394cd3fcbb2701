"""One error root for cloudplan, with families.

Library code raises these; third-party failures (pydantic, PuLP, pyghmi,
paramiko, YAML) are translated where they enter, keeping the object the error
is about as attributes. The CLI catches ``CloudplanError`` in one place and
prints ``str(err)`` as one ``Error: ...`` line, so messages must name the file,
field or node, and must never contain a secret.
"""

from __future__ import annotations


class CloudplanError(Exception):
    """Root of every error cloudplan raises on purpose."""

    exit_code = 1


class UsageError(CloudplanError):
    """The command line itself is wrong (exit code 2, like typer/click)."""

    exit_code = 2


class SpecError(CloudplanError):
    """An input file (workload, catalog, site, inventory) is unreadable or invalid.

    ``path`` is the file, ``field`` the dotted/indexed path inside it
    (``flavors[3].ram_gib``), ``line``/``column`` are 1-based when known.
    """

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None,
                 line: int | None = None, column: int | None = None):
        self.path, self.field, self.line, self.column = path, field, line, column
        where = path or "<input>"
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}")
        self.message = message


class Infeasible(CloudplanError):
    """No plan meets the requirements; ``requirement`` names the one that cannot be met."""

    def __init__(self, message: str, *, requirement: str | None = None):
        super().__init__(message)
        self.requirement = requirement


class SolverError(CloudplanError):
    """The solver failed for a reason other than infeasibility (missing, crashed, timed out empty)."""


class BMCError(CloudplanError):
    """A BMC could not be driven. ``node`` and ``address`` say which; never the password."""

    retryable = False

    def __init__(self, message: str, *, node: str | None = None, address: str | None = None):
        self.node, self.address = node, address
        who = " ".join(x for x in (node and f"node {node}", address and f"(BMC {address})") if x)
        super().__init__(f"{who}: {message}" if who else message)


class BMCAuthError(BMCError):
    """Wrong BMC credentials: retrying cannot help."""


class BMCUnreachable(BMCError):
    """No answer from the BMC within its timeout."""

    retryable = True


class BMCBusy(BMCError):
    """The BMC answered but asked us to come back later."""

    retryable = True


class BMCFault(BMCError):
    """The IPMI session failed without the BMC saying no (a session or socket hiccup):
    retried with a fresh session."""

    retryable = True


class BMCTLSError(BMCError):
    """The BMC's TLS certificate is not the one trusted (wrong CA, host name or pinned
    fingerprint): retrying cannot help, and going on would hand the password to it."""


class BMCUnsupported(BMCError):
    """The BMC lacks what was asked of it (virtual media, UEFI HTTP boot, a boot target)."""


class ProvisioningFailed(CloudplanError):
    """A node could not be brought up; ``node`` and ``step`` say where."""

    def __init__(self, message: str, *, node: str | None = None, step: str | None = None):
        self.node, self.step = node, step
        super().__init__(f"node {node}: {step}: {message}" if node else message)


class ProvisioningTimeout(ProvisioningFailed):
    """A provisioning step ran past its deadline."""


class StateLocked(CloudplanError):
    """Another cloudplan process holds the state file."""


class StateMissing(CloudplanError):
    """A reader (status, events, a dry run) asked for a state store that holds no state yet."""


class StateFileError(CloudplanError):
    """The state file cannot be read or written (full disk, read-only, corrupt, not ours).
    What was stored before the failure is kept; the message names the file."""


class ManifestError(CloudplanError):
    """Control-plane files cannot be rendered from this input."""


class UpgradeError(CloudplanError):
    """An upgrade hop or rehearsal input is invalid."""


class LabError(CloudplanError):
    """The virtual rack cannot be built, started or removed; the message names the step."""


class ImageError(CloudplanError):
    """A deployable OS image cannot be built or read; the message names the step or tool."""
