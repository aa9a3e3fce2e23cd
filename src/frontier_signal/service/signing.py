"""Signed file URLs, the way object storage pre-signs them (tinker's `external_weights_urls`).

A URL names one file of one checkpoint and an expiry, and carries an HMAC-SHA256 over exactly
those three with a server secret: whoever holds the URL can fetch that file until it expires,
with no API key, and nothing else. The secret is `<data_dir>/url-signing.key` (32 random bytes,
hex), created once with mode 0600; deleting it (and restarting) revokes every URL handed out.
It knows nothing about HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from frontier_signal.service.errors import Forbidden

SECRET_FILE = "url-signing.key"
DEFAULT_EXPIRY_SECONDS = 3600


def load_or_create_secret(data_dir: Path) -> bytes:
    """The data folder's signing secret, made on first use (mode 0600, written atomically:
    a second process racing to create it reads the winner's)."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} is not a signing secret (expected 64 hex characters)")
    return secret.encode()


class UrlSigner:
    """Signs and checks `(checkpoint id, file path, expiry)` triples. `clock` is injectable."""

    def __init__(self, data_dir: Path, clock=time.time):
        self.data_dir = data_dir
        self.clock = clock
        self._secret: bytes | None = None

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_or_create_secret(self.data_dir)
        return self._secret

    def signature(self, checkpoint_id: str, relpath: str, expires: int) -> str:
        message = f"v1\n{checkpoint_id}\n{relpath}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def expiry(self, seconds: int = DEFAULT_EXPIRY_SECONDS) -> int:
        return int(self.clock()) + seconds

    def check(self, checkpoint_id: str, relpath: str, expires: str, signature: str) -> None:
        """Raises Forbidden unless the signature is this server's for exactly this file and
        expiry, and the expiry has not passed."""
        if not expires or not signature:
            raise Forbidden(
                "this file URL is not signed: it needs 'expires' and 'signature' query "
                "parameters (ask external_weights_urls for signed URLs)"
            )
        try:
            expires_at = int(expires)
        except ValueError:
            raise Forbidden(
                "the signed URL is malformed: 'expires' is not a number (bad signature)"
            ) from None
        expected = self.signature(checkpoint_id, relpath, expires_at)
        # compare_digest takes only ASCII str: anything else cannot be our hex signature.
        if not signature.isascii() or not hmac.compare_digest(expected, signature.lower()):
            raise Forbidden(
                "the URL's signature is not valid for this file; ask for new URLs "
                "(external_weights_urls)"
            )
        if self.clock() >= expires_at:
            raise Forbidden(
                f"the signed URL expired at {expires_at} (unix time); ask for new URLs "
                "(external_weights_urls)"
            )
