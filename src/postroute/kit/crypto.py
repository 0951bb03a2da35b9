"""Secrets at rest (MultiFernet, rotatable) and one-way hashes for API keys and passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretDecryptError(Exception):
    """A stored secret could not be decrypted with any configured key (the key was changed?)."""


def _fernet_key(secret: str, purpose: bytes) -> bytes:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"postroute", info=purpose).derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(raw)


class SecretBox:
    """Encrypts with the first key, decrypts with any: list the new key first to rotate."""

    def __init__(self, secret_keys: list[str]) -> None:
        self._fernet = MultiFernet([Fernet(_fernet_key(k, b"secrets-v1")) for k in secret_keys])
        self._sign_key = hashlib.sha256(b"postroute-sign:" + secret_keys[0].encode()).digest()

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the current (first) key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None

    def sign(self, data: bytes) -> str:
        return hmac.new(self._sign_key, data, hashlib.sha256).hexdigest()


def hash_token(token: str) -> str:
    """API keys are long random strings: a plain SHA-256 is the right lookup hash."""
    return hashlib.sha256(token.encode()).hexdigest()


_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
