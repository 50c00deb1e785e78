"""What a client presents to a node: its token and its TLS settings, read the
same way by ``mkv.Client``, ``mkv.AdminClient`` and ``mkvctl``."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

import anyio
import attrs

from mkv.rpc.auth import authorization_metadata, load_token
from mkv.rpc.tls import client_context

__all__ = ["ClientCredentials", "client_credentials"]

PathLike = Path | str


@attrs.frozen
class ClientCredentials:
    # Sent with every call.
    metadata: tuple[tuple[str, str], ...]
    # None: plain TCP.
    ssl_context: ssl.SSLContext | None


async def client_credentials(
    *,
    env_var: str,
    token: str | None = None,
    token_file: PathLike | None = None,
    tls: bool = False,
    ca: PathLike | None = None,
    cert: PathLike | None = None,
    key: PathLike | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ClientCredentials:
    """The credentials for a connection.

    Args:
        env_var: where the token is looked up when neither ``token`` nor
            ``token_file`` is given (``MKV_TOKEN``, ``MKV_DATA_TOKEN``).
        token: the token itself.
        token_file: a file holding the token.
        tls: connect over TLS (implied by ``ca``, ``cert`` or ``ssl_context``);
            without ``ca``, the server is verified against the system's CAs.
        ca: a CA bundle (PEM) to verify the server with.
        cert, key: a client certificate and its key (PEM), for mTLS.
        ssl_context: a ready-made client context (other TLS arguments ignored).

    Raises:
        ConfigError: a file cannot be read, or a token is empty.
    """
    # Files are read in a thread: the event loop may be serving other work.
    found = await anyio.to_thread.run_sync(
        functools.partial(load_token, token_file, env_var, token=token)
    )
    if ssl_context is None and (tls or ca is not None or cert is not None):
        ssl_context = await anyio.to_thread.run_sync(client_context, ca, cert, key)
    return ClientCredentials(authorization_metadata(found), ssl_context)
