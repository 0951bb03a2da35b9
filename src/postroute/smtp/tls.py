"""The listeners' TLS: the certificate from settings, or a self-signed pair made once in
the data dir; TLS 1.2 or newer only."""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postroute.config import Settings
from postroute.datadir import ensure_dir

TLS_DIR = "tls"
CERT_FILE = "smtp-cert.pem"
KEY_FILE = "smtp-key.pem"
VALID_FOR = timedelta(days=3650)


def server_context(settings: Settings, hostname: str) -> ssl.SSLContext:
    """Server context for both listeners (no client certificates asked)."""
    cert, key = certificate_files(settings, hostname)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def certificate_files(settings: Settings, hostname: str) -> tuple[Path, Path]:
    if settings.tls_cert is not None and settings.tls_key is not None:
        return settings.tls_cert, settings.tls_key
    if settings.tls_cert is not None or settings.tls_key is not None:
        raise ValueError("set both POSTROUTE_TLS_CERT and POSTROUTE_TLS_KEY, or neither")
    return ensure_self_signed(settings.data_dir / TLS_DIR, hostname)


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """``directory``'s certificate and key, created on first use (key mode 0600).

    The pair is written to a temporary directory renamed into place, so processes
    starting together end up with one consistent pair.
    """
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    if cert.exists() and key.exists():
        return cert, key
    ensure_dir(directory.parent)  # the data dir: private (0700) if it is made here
    staging = Path(tempfile.mkdtemp(prefix=".tls-", dir=directory.parent))
    try:
        cert_pem, key_pem = self_signed_pem(hostname)
        fd = os.open(staging / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        (staging / CERT_FILE).write_bytes(cert_pem)
        os.rename(staging, directory)
    except OSError:
        if not (cert.exists() and key.exists()):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # left only when another process won
    return cert, key


def self_signed_pem(hostname: str) -> tuple[bytes, bytes]:
    """(certificate, private key) in PEM: ECDSA P-256, for ``hostname``, localhost and
    the loopback addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    dns = dict.fromkeys(h for h in (hostname, "localhost") if h and h.isascii())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
