"""URLs made safe to show: the one way logs, errors and CLI output print a configured URL."""

from urllib.parse import urlsplit

UNPARSEABLE = "<unparseable URL>"
HIDDEN = "***"


def redacted(url: str) -> str:
    """`url` with its password as `***`, query and fragment dropped; never the raw text."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port  # ValueError on a port that is no number
    except (ValueError, TypeError, AttributeError):
        # a URL we cannot take apart may hold a password anywhere: echo none of it
        return UNPARSEABLE
    # no scheme: maybe not a URL at all (a password pasted in the wrong variable);
    # an `@` after the host: a password with an unescaped `/` spilled into the path
    if not parts.scheme or (parts.netloc and "@" in parts.path):
        return UNPARSEABLE
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:{HIDDEN}@{netloc}" if parts.password is not None else f"{user}@{netloc}"
    # the query may carry secrets too (`?password=`, `?token=`): keep the path only
    return f"{parts.scheme}://{netloc}{parts.path}"
