"""Bearer tokens: where they come from, and the check a port makes.

A token never comes from a command-line argument (``ps`` shows those to every
user): it is read from a file or an environment variable. A call carries it as
the metadata ``authorization: Bearer <token>``; the server compares it in
constant time. Missing → UNAUTHENTICATED, wrong → PERMISSION_DENIED.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from mkv.errors import ConfigError, PermissionDeniedError, UnauthenticatedError
from mkv.rpc.server import CallInfo
from mkv.wire import is_loopback

__all__ = [
    "CONTROL_TOKEN_ENV",
    "DATA_TOKEN_ENV",
    "TokenCheck",
    "authorization_metadata",
    "is_loopback",
    "load_token",
]

# The control plane's token (mkv serve, mkvctl, mkv.AdminClient).
CONTROL_TOKEN_ENV = "MKV_TOKEN"
# The data plane's optional token (mkv serve, mkvctl, mkv.Client).
DATA_TOKEN_ENV = "MKV_DATA_TOKEN"


def load_token(
    token_file: Path | str | None,
    env_var: str,
    environ: Mapping[str, str] | None = None,
    *,
    token: str | None = None,
) -> str | None:
    """The token to use: ``token`` if given, else the file's contents
    (surrounding whitespace stripped), else the environment variable; None when
    there is none.

    Raises:
        ConfigError: the file cannot be read, or a token is empty.
    """
    if token is None and token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc}") from None
        if not token:
            raise ConfigError(f"token file {token_file} is empty")
    if token is None:
        token = (os.environ if environ is None else environ).get(env_var)
        if token is not None and not token.strip():
            raise ConfigError(f"environment variable {env_var} is set but empty")
        token = token.strip() if token is not None else None
    if token is not None and not token:
        raise ConfigError("the token is empty")
    return token


def authorization_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The request metadata that carries ``token`` (none without one)."""
    return () if token is None else (("authorization", f"Bearer {token}"),)


class TokenCheck:
    """A guard (``mkv.rpc.server.Guard``) admitting only calls that carry ``token``.

    Args:
        token: the token every call must carry.
        plane: how refusals name the port ("control plane").
    """

    def __init__(self, token: str, plane: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._plane = plane

    def __call__(self, call: CallInfo) -> None:
        """Raises:
        UnauthenticatedError: the call carries no ``authorization`` metadata.
        PermissionDeniedError: it carries another token.
        """
        header = call.metadata.get("authorization")
        if header is None:
            raise UnauthenticatedError(
                f"The {self._plane} requires a token: send 'authorization: Bearer <token>'."
            )
        # Constant time: how long the comparison takes says nothing of how
        # much of the token was right.
        if not hmac.compare_digest(header.encode(), self._expected):
            raise PermissionDeniedError(f"The token is not the {self._plane}'s token.")
