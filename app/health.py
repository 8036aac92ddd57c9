"""Liveness and readiness probes for orchestrators and load balancers."""

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app import db

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/ready")
def ready() -> JSONResponse:
    """Every dependency answers; 503 naming the ones that do not."""
    checks: dict[str, str] = {}
    try:
        db.ping()
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        logger.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if healthy else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)
