"""Placeholder router until the GraphQL schema lands."""

from fastapi import APIRouter

from app.config import Settings


def create_router(settings: Settings) -> APIRouter:
    """The /graphql router for these settings."""
    del settings
    return APIRouter()
