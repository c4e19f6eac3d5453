"""Certificates for the test control plane, made with the openssl command line.

ECDSA P-256 keys: generating them is instant, and every component accepts them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = "3650"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(path: Path) -> None:
    _openssl(
        "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path), cwd=path.parent
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, as files."""

    cert: Path
    key: Path


class Pki:
    """A throwaway CA in one directory, issuing the serving and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = CertPair(self.dir / "ca.crt", self.dir / "ca.key")
        _key(self.ca.key)
        _openssl(
            "req", "-x509", "-new", "-key", str(self.ca.key), "-out", str(self.ca.cert),
            "-days", VALID_DAYS, "-subj", "/CN=infermodes-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            cwd=self.dir,
        )  # fmt: skip

    def issue(self, name: str, subject: str, *, server_sans: str | None = None) -> CertPair:
        """Issue `name.crt` for `subject` (e.g. "/O=system:masters/CN=admin").

        With server_sans (e.g. "IP:127.0.0.1,DNS:localhost") it is a serving certificate,
        otherwise a client certificate.
        """
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        _key(pair.key)
        csr = self.dir / f"{name}.csr"
        _openssl(
            "req", "-new", "-key", str(pair.key), "-out", str(csr), "-subj", subject, cwd=self.dir
        )
        usage = "serverAuth" if server_sans else "clientAuth"
        ext = self.dir / f"{name}.ext"
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        if server_sans:
            lines.append(f"subjectAltName={server_sans}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key),
            "-CAcreateserial", "-out", str(pair.cert), "-days", VALID_DAYS, "-extfile", str(ext),
            cwd=self.dir,
        )  # fmt: skip
        csr.unlink()
        ext.unlink()
        return pair

    def service_account_keys(self) -> CertPair:
        """The key pair the API server signs and verifies service-account tokens with."""
        pair = CertPair(self.dir / "sa.pub", self.dir / "sa.key")
        _key(pair.key)
        _openssl("ec", "-in", str(pair.key), "-pubout", "-out", str(pair.cert), cwd=self.dir)
        return pair
