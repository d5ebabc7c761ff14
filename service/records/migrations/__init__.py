"""Alembic migrations of the records database (a package so it ships in the wheel)."""
