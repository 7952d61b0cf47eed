"""The client ``ssl.SSLContext`` for DoT and DoH (RFC 8310 strict privacy profile).

The server is authenticated by its name (``#auth-name`` in the URL, checked against the
certificate with the system CAs or ``ca_file``). Any failure is a hard failure: never an
unauthenticated or cleartext retry.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence


def make_context(ca_file: str | None, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A client context: certificate and host name checked, TLS 1.2 minimum (RFC 8310 9).

    With ``ca_file`` only that bundle is trusted, otherwise the system's CAs. The bundle was
    checked once, when the config was read (config._check_ca_file).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
