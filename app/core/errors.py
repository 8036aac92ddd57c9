"""Domain errors: small, carrying the field and the reason; the edges translate them."""


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    code = "INTERNAL"


class ValidationError(DomainError):
    """Bad input for one field; nothing was changed."""

    code = "BAD_USER_INPUT"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFoundError(DomainError):
    """The thing asked for does not exist (or is not visible)."""

    code = "NOT_FOUND"

    def __init__(self, entity: str, ident: object) -> None:
        super().__init__(f"{entity} {ident} not found")
        self.entity = entity
        self.ident = ident


class AuthenticationError(DomainError):
    """No valid identity: missing, expired or forged token, or wrong credentials."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(DomainError):
    """A known user whose role does not allow the action."""

    code = "FORBIDDEN"


class RateLimitedError(DomainError):
    """Too many requests or attempts; `retry_after` says in how many seconds to try again."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
