"""How a Redfish client trusts a BMC: a CA bundle, a pinned certificate, or (only
when asked) nothing.

BMCs ship self-signed certificates; operators either load one signed by their
own CA (``ca_file``) or pin the certificate they saw at racking time
(``cert_sha256``, what ``openssl x509 -fingerprint -sha256`` prints). Pinning
checks the leaf certificate's fingerprint on every connection, through
urllib3's ``assert_fingerprint``, and skips the chain and host-name checks a
self-signed certificate cannot pass.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from requests.adapters import HTTPAdapter

from cloudplan.errors import SpecError


@dataclass(frozen=True)
class TrustPolicy:
    ca_file: str | None = None        # PEM bundle; None: the system's trust store
    cert_sha256: str | None = None    # 64 hex digits, lowercase, no colons
    insecure: bool = False

    def requests_verify(self) -> bool | str:
        """The ``verify`` argument requests (and sushy) take."""
        if self.insecure or self.cert_sha256:
            return False              # the pinned fingerprint is checked by the adapter instead
        return self.ca_file or True

    def check(self, field: str = "bmc") -> None:
        if self.ca_file and not Path(self.ca_file).is_file():
            raise SpecError("CA bundle not found", path=self.ca_file, field=f"{field}.ca_file")

    def describe(self) -> str:
        if self.insecure:
            return "TLS not verified (insecure)"
        if self.cert_sha256:
            return f"pinned certificate sha256 {self.cert_sha256[:16]}..."
        return f"CA {self.ca_file}" if self.ca_file else "system CA store"


class PinnedCertAdapter(HTTPAdapter):
    """An HTTPS adapter that accepts exactly one server certificate (by SHA-256)."""

    def __init__(self, sha256_hex: str, **kwargs):
        self._fingerprint = sha256_hex
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["assert_fingerprint"] = self._fingerprint
        return super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args, **kwargs):
        kwargs["assert_fingerprint"] = self._fingerprint
        return super().proxy_manager_for(*args, **kwargs)


def fingerprint_sha256(pem_or_der: bytes) -> str:
    """The SHA-256 fingerprint (lowercase hex) of a PEM or DER certificate."""
    der = pem_or_der
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        der = ssl.PEM_cert_to_DER_cert(pem_or_der.decode("ascii"))
    return hashlib.sha256(der).hexdigest()
