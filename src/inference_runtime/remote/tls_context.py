"""The TLS context of a remote deployment that names its own authorities or client certificate.

Without either, ``None``: the HTTP client's shared default context (the system's authorities),
made once. Errors name the field and the file, which are not secrets.
"""

from __future__ import annotations

import ssl


def tls_context(
    *, ca_bundle: str | None, client_cert: str | None, client_key: str | None
) -> ssl.SSLContext | None:
    if ca_bundle is None and client_cert is None:
        return None
    try:
        context = ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"runtime_config.ca_bundle: cannot load {ca_bundle}: {_why(error)}"
        ) from None
    if client_cert is not None:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"runtime_config.client_cert: cannot load {client_cert}"
                f"{f' with {client_key}' if client_key else ''}: {_why(error)}"
            ) from None
    context.set_alpn_protocols(["http/1.1"])  # as the default context: HTTP/2 is not spoken
    return context


def _why(error: BaseException) -> str:
    return getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
