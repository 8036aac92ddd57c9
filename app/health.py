"""Liveness and readiness probes for orchestrators and load balancers."""

import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app import db

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/health", tags=["health"])


def _database() -> bool:
    try:
        db.ping()
    except SQLAlchemyError as exc:
        logger.warning("readiness: database unreachable: %s", exc)
        return False
    return True


# name -> probe; components that start later (ingest, bus) add theirs
_checks: dict[str, Callable[[], bool]] = {"database": _database}


def register_check(name: str, check: Callable[[], bool]) -> None:
    """Make readiness depend on `check()` being true."""
    _checks[name] = check


def unregister_check(name: str) -> None:
    """Stop checking `name` (its component stopped on purpose)."""
    _checks.pop(name, None)


@router.get("/live")
def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/ready")
def ready() -> JSONResponse:
    """Every dependency answers; 503 naming the ones that do not."""
    checks = {name: "ok" if check() else "unreachable" for name, check in list(_checks.items())}
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if healthy else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)
