"""DKIM keys: made (RSA-2048, Ed25519), written for the DNS (``p=``), kept encrypted
(the secret box of relay passwords) and loaded back for signing."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroute.kit.crypto import SecretBox
from postroute.preparation.dkim import PrivateKey

RSA = "rsa"
ED25519 = "ed25519"
RSA_BITS = 2048


@dataclass(frozen=True)
class NewKey:
    algorithm: str
    private_pem: str  # PKCS #8, unencrypted: only ever stored through the secret box
    public: str  # base64, the DNS record's p=


def generate(algorithm: str) -> NewKey:
    key: PrivateKey
    if algorithm == RSA:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif algorithm == ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r}")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return NewKey(algorithm, pem.decode("ascii"), base64.b64encode(public).decode("ascii"))


def record_value(algorithm: str, public: str) -> str:
    """The TXT value: ``v=DKIM1; k=rsa; p=...``."""
    return f"v=DKIM1; k={'ed25519' if algorithm == ED25519 else 'rsa'}; p={public}"


def load(box: SecretBox, encrypted: str) -> PrivateKey:
    """A stored key, decrypted and loaded (done once per key by its users)."""
    key = serialization.load_pem_private_key(box.decrypt(encrypted).encode("ascii"), None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("a stored DKIM key is neither RSA nor Ed25519")
    return key


def selector(now: datetime, algorithm: str, taken: set[str]) -> str:
    """A new selector: ``pr`` and the date, a letter, ``e`` for Ed25519 (``pr20261204ae``);
    never one the domain used before (its DNS name may still be cached somewhere)."""
    for letter in "abcdefghijklmnopqrstuvwxyz":
        name = f"pr{now:%Y%m%d}{letter}{'e' if algorithm == ED25519 else ''}"
        if name not in taken:
            return name
    raise ValueError("too many DKIM keys made for this domain today")
