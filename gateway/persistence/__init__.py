"""Persistence: SQLAlchemy Core tables, the async engine, the agent registry and the session writer."""
