"""The decision log: durable records of hook calls, decisions and feedback (SQLite or PostgreSQL)."""

from service.records.store import DecisionLog, FeedbackItem, OverrideReason

__all__ = ["DecisionLog", "FeedbackItem", "OverrideReason"]
