"""Liveness and readiness probes for orchestrators and load balancers."""

import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.core import db

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/health", tags=["health"])


# a probe answers True (fine), False ("unreachable") or a phrase saying what is wrong
Check = Callable[[], bool | str]


def _database() -> bool | str:
    try:
        db.ping()
    except db.DatabaseUnavailableError as exc:
        logger.warning("readiness: database unavailable: %s", exc.reason)
        return exc.reason  # "circuit open since ..., last error: ...", or the error itself
    except SQLAlchemyError as exc:
        logger.warning("readiness: database unreachable: %s", exc)
        return False
    return True


# name -> probe; components that start later (ingest, bus) add theirs
_checks: dict[str, Check] = {"database": _database}


def register_check(name: str, check: Check) -> None:
    """Make readiness depend on `check()` being true (or a phrase saying why it is not)."""
    _checks[name] = check


def unregister_check(name: str) -> None:
    """Stop checking `name` (its component stopped on purpose)."""
    _checks.pop(name, None)


@router.get("/live")
def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


def _outcome(answer: bool | str) -> str:
    if answer is True:
        return "ok"
    return answer or "unreachable"


@router.get("/ready")
def ready() -> JSONResponse:
    """Every dependency answers; 503 naming the ones that do not."""
    checks = {name: _outcome(check()) for name, check in list(_checks.items())}
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if healthy else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)
