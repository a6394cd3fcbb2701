"""Redfish BMCs for tests and benchmarks: sushy-tools' emulator, run as child processes.

:class:`Emulator` starts ``sushy-emulator`` (PyPI ``sushy-tools``, the Redfish
emulator OpenStack tests sushy and Ironic against) on loopback with its fake
driver, over HTTPS with a certificate from :class:`TestCA`, HTTP basic auth
from a bcrypt file, one or many fake systems, and its state in a directory of
its own (its default is one shared directory under /tmp). The fake driver
records what a real machine would act on: power state (applied 1-11 s late,
like real hardware), boot target and mode, the inserted virtual media (which
the emulator downloads from its URL, so a URL that does not serve fails).

The lab driver is the fake driver plus one thing it lacks: it keeps the
``HttpBootUri`` of a UEFI HTTP boot override (sushy-tools stores it only in
its libvirt driver), so ``python -m cloudplan.lab.bmcsim.redfish`` is the
emulator's own ``main`` with that added.

:class:`FaultProxy` (in :mod:`.proxy`) sits in front of an emulator to answer
503, go silent, or turn an action into a 202 task.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cloudplan.errors import LabError
from cloudplan.lab.ports import free_tcp_port

START_TIMEOUT_S = 30.0


# -- certificates -------------------------------------------------------------------


@dataclass
class CertFiles:
    cert: Path
    key: Path


class TestCA:
    """A throw-away CA and server certificates it signs (for 127.0.0.1 and localhost)."""

    def __init__(self, directory: Path, name: str = "cloudplan test CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._name = subject
        self._cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(minutes=5))
                      .not_valid_after(now + datetime.timedelta(days=2))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                   content_commitment=False, key_encipherment=False,
                                                   data_encipherment=False, key_agreement=False,
                                                   encipher_only=False, decipher_only=False), critical=True)
                      .sign(self._key, _sha256()))
        self.cert_file = self.dir / "ca.pem"
        self.cert_file.write_bytes(_pem(self._cert))

    def issue(self, stem: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> CertFiles:
        """A server certificate for ``hosts`` (IP addresses or DNS names), signed by this CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        sans = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(self._name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self._key, _sha256()))
        out = CertFiles(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        out.cert.write_bytes(_pem(cert))
        out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        os.chmod(out.key, 0o600)
        return out


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


# -- the emulator ---------------------------------------------------------------------


@dataclass
class FakeSystem:
    name: str
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    power_state: str = "Off"
    mac: str = "52:54:00:00:00:01"
    extra: dict = field(default_factory=dict)   # more keys of the system's entry, for a driver that reads them

    @property
    def path(self) -> str:
        return f"/redfish/v1/Systems/{self.uuid}"


class Emulator:
    """One sushy-tools emulator process on loopback over HTTPS; stopped on exit."""

    def __init__(self, systems: list[FakeSystem], *, tls: CertFiles, username: str = "admin",
                 password: str = "secret", port: int = 0, workdir: Path | None = None, module: str = __name__,
                 host: str = "127.0.0.1"):
        self.systems, self.tls, self.username = systems, tls, username
        self.module = module     # whose main() runs the emulator: this one (fake driver) or a lab driver's
        self.__password = password
        self.host = host         # the address it listens on (the certificate must name it)
        self.port = port or free_tcp_port(host)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="redfish-emu-")
        self.dir = Path(workdir or self._tmp.name)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _write_config(self) -> Path:
        import bcrypt

        auth = self.dir / "htpasswd"
        digest = bcrypt.hashpw(self.__password.encode(), bcrypt.gensalt(rounds=4)).decode()
        auth.write_text(f"{self.username}:{digest}\n")
        os.chmod(auth, 0o600)
        conf = {
            "SUSHY_EMULATOR_LISTEN_IP": self.host,
            "SUSHY_EMULATOR_LISTEN_PORT": self.port,
            "SUSHY_EMULATOR_SSL_CERT": str(self.tls.cert),
            "SUSHY_EMULATOR_SSL_KEY": str(self.tls.key),
            "SUSHY_EMULATOR_AUTH_FILE": str(auth),
            "SUSHY_EMULATOR_STATE_DIR": str(self.dir / "state"),
            "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FAKE_SYSTEMS": [
                {"uuid": s.uuid, "name": s.name, "power_state": s.power_state, "external_notifier": False,
                 "nics": [{"mac": s.mac, "ip": "192.0.2.1"}], **s.extra} for s in self.systems],
        }
        path = self.dir / "emulator.conf"
        path.write_text("".join(f"{k} = {v!r}\n" for k, v in conf.items()))
        return path

    def start(self) -> "Emulator":
        conf = self._write_config()
        log = open(self.dir / "emulator.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, "--config", str(conf)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"sushy-emulator exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                # Readiness only: some tests give the emulator a certificate made not to verify.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    requests.get(self.url + "/redfish/v1/", verify=False, timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise LabError(f"sushy-emulator did not answer on port {self.port} within {START_TIMEOUT_S:g} s")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.dir / "emulator.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # What the fake machine recorded, read straight from the emulator (not through cloudplan's client).
    def system_json(self, system: FakeSystem) -> dict:
        return self._get(system.path)

    def cd_json(self, system: FakeSystem) -> dict:
        return self._get(f"{system.path}/VirtualMedia/Cd")

    def _get(self, path: str) -> dict:
        import requests

        rsp = requests.get(self.url + path, auth=(self.username, self.__password), verify=str(self._ca()),
                           timeout=10)
        rsp.raise_for_status()
        return rsp.json()

    def _ca(self) -> Path:
        return self.tls.cert.parent / "ca.pem"


# -- the lab driver: the emulator's own main, with HttpBootUri kept per process -----------


def _patch_fake_driver() -> None:
    """Give the fake driver a per-system HttpBootUri.

    The emulator calls ``set_http_boot_uri(uri)`` without the system, right after
    ``set_boot_image(uuid, ...)`` in the same request thread: that call says which."""
    import threading

    from sushy_tools.emulator.resources.systems import fakedriver

    cls = fakedriver.FakeDriver
    current = threading.local()
    uris: dict[str, str] = {}
    set_boot_image = cls.set_boot_image

    def set_boot_image_noting(self, identity, device, boot_image=None, write_protected=True):
        current.identity = identity
        return set_boot_image(self, identity, device, boot_image=boot_image, write_protected=write_protected)

    def get_http_boot_uri(self, identity):
        return uris.get(self.uuid(identity))

    def set_http_boot_uri(self, uri):
        uris[getattr(current, "identity", "")] = uri

    cls.set_boot_image = set_boot_image_noting
    cls.get_http_boot_uri = get_http_boot_uri
    cls.set_http_boot_uri = set_http_boot_uri


def main(argv: list[str] | None = None) -> int:
    from sushy_tools.emulator import main as emulator

    _patch_fake_driver()
    sys.argv = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    return emulator.main()


if __name__ == "__main__":
    sys.exit(main())




class EmulatorFleet:
    """Many fake systems spread over ``processes`` emulators (one CA, one certificate)."""

    def __init__(self, systems: list[FakeSystem], *, processes: int, workdir: Path, password: str,
                 username: str = "admin"):
        self.dir = Path(workdir)
        self.ca = TestCA(self.dir / "ca")
        tls = self.ca.issue("fleet")
        share = -(-len(systems) // max(1, processes))
        self.emulators = [Emulator(systems[i:i + share], tls=tls, username=username, password=password,
                                   workdir=self._mkdir(f"emu-{i // share}"))
                          for i in range(0, len(systems), share)]
        self.where = {s.uuid: e for e in self.emulators for s in e.systems}

    def _mkdir(self, name: str) -> Path:
        d = self.dir / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def __enter__(self) -> "EmulatorFleet":
        try:
            for e in self.emulators:
                e.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for e in self.emulators:
            e.stop()

    def url_of(self, system: FakeSystem) -> str:
        return self.where[system.uuid].url

    def resets(self) -> dict[str, int]:
        """Reset actions each system's emulator answered 204 (from the emulators' request logs)."""
        import re

        out: dict[str, int] = {}
        # werkzeug's request log, colour codes and all: "POST /redfish/v1/Systems/<id>/Actions/... HTTP/1.1" 204
        line = re.compile(r'POST /redfish/v1/Systems/([0-9a-f-]+)/Actions/ComputerSystem\.Reset HTTP/1\.1\S*" 204')
        for e in self.emulators:
            for m in line.finditer((e.dir / "emulator.log").read_text(errors="replace")):
                out[m.group(1)] = out.get(m.group(1), 0) + 1
        return out
