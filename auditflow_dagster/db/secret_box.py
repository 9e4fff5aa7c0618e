"""Encryption of stored webhook secrets (Fernet; spec 01 §4.3: "encrypt, never return").

The key is ``AUDITFLOW_SECRET_KEY`` (a Fernet key: urlsafe base64 of 32 bytes). Outside production
an unset key is generated once and kept in ``$AUDITFLOW_HOME/secret.key`` (mode 0600) so every
process of a deployment shares it; creation is race-free (the complete key is written to a private
temporary file and published with ``link``, which fails if another process won). Production without
a key is a configuration error: secrets sealed with a throw-away key would be unreadable after a
restart.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from auditflow_dagster.settings import get_settings, normalize_secret

KEY_FILE_NAME = "secret.key"


class SecretKeyError(RuntimeError):
    """The encryption key is missing or malformed, or a token cannot be decrypted with it."""


@functools.lru_cache(maxsize=8)
def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise SecretKeyError(
            "AUDITFLOW_SECRET_KEY is not a valid Fernet key (urlsafe base64 of 32 bytes; "
            "generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None


def _read_key_file(path: Path) -> str:
    key = path.read_text(encoding="ascii").strip()
    if not key:
        raise SecretKeyError(f"{path} is empty; delete it to generate a new key")
    return key


def _load_or_create_key_file(home: Path) -> str:
    path = home / KEY_FILE_NAME
    if path.exists():
        return _read_key_file(path)
    home.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".secret.key.", dir=home)  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic publish; fails if another process published first
        except FileExistsError:
            pass
        except OSError:  # filesystem without hard links: exclusive create instead
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(out, "wb") as f:
                    f.write(Path(tmp).read_bytes())
    finally:
        os.unlink(tmp)
    os.chmod(path, 0o600)
    return _read_key_file(path)


def current_key() -> str:
    """The Fernet key in use (settings first, then the development key file)."""
    settings = get_settings()
    key = normalize_secret(settings.secret_key.get_secret_value())
    if key:
        return key
    if settings.is_production:
        raise SecretKeyError(
            "AUDITFLOW_SECRET_KEY must be set in production (it encrypts stored webhook secrets)"
        )
    return _load_or_create_key_file(settings.home_dir)


def seal(secret: str) -> str:
    """Encrypt ``secret``; the token is ASCII and safe to store in a text column."""
    return _fernet(current_key()).encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(token: str) -> str:
    """Decrypt a token made by :func:`seal`. A wrong key or a corrupt token raises
    :class:`SecretKeyError` (the message never contains the token)."""
    try:
        return _fernet(current_key()).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError):
        raise SecretKeyError("stored webhook secret cannot be decrypted (was AUDITFLOW_SECRET_KEY changed?)") from None
