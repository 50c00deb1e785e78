"""TLS contexts for mkv's ports and clients (HTTP/2 over TLS, ALPN "h2").

A server with a client CA requires and verifies client certificates (mTLS).
Contexts are built from files, so they are built once, off the event loop
where it is running.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mkv.errors import ConfigError

__all__ = ["client_context", "handshake_failure", "server_context"]

_ALPN = ["h2"]  # gRPC clients refuse a TLS server that does not offer HTTP/2


def server_context(
    cert_file: Path | str, key_file: Path | str, client_ca_file: Path | str | None = None
) -> ssl.SSLContext:
    """A server-side context with the node's certificate; with
    ``client_ca_file``, clients must present a certificate that CA signed.

    Raises:
        ConfigError: a file cannot be read or does not hold what it should.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(_ALPN)
    try:
        context.load_cert_chain(cert_file, key_file)
        if client_ca_file is not None:
            context.load_verify_locations(cafile=client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate, key or client CA: {exc}") from None
    return context


def client_context(
    ca_file: Path | str | None = None,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
) -> ssl.SSLContext:
    """A client-side context verifying the server against ``ca_file`` (the
    system's CAs when None), presenting ``cert_file`` when given (mTLS).

    Raises:
        ConfigError: a file cannot be read or does not hold what it should.
    """
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(_ALPN)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS CA, certificate or key: {exc}") from None
    return context


# OpenSSL's reasons for the failures people meet, said in their terms.
_HANDSHAKE_REASONS = {
    # The first bytes back were not a TLS record: the port speaks plaintext
    # (an mkv node without --tls-cert answers in HTTP/2 frames).
    "WRONG_VERSION_NUMBER": "the server does not speak TLS there (is it a plaintext port? "
    "connect without TLS, or serve with a certificate)",
    "CERTIFICATE_VERIFY_FAILED": "the server's certificate is not signed by a CA this client "
    "trusts (give the CA that signed it)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate (mTLS)",
}


def handshake_failure(address: object, exc: ssl.SSLError) -> str:
    """One sentence for a failed TLS handshake: what probably went wrong, then
    OpenSSL's own reason, so nobody is left with a bare ``WRONG_VERSION_NUMBER``."""
    reason = exc.reason or str(exc)
    known = _HANDSHAKE_REASONS.get(reason)
    if known is None and isinstance(exc, ssl.SSLCertVerificationError):
        known = _HANDSHAKE_REASONS["CERTIFICATE_VERIFY_FAILED"]
    explained = f"{known} [{reason}]" if known else reason
    return f"The TLS handshake with mkv at {address} failed: {explained}."
