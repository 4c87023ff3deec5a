"""Connection strings for each database role, for tests that check what a role may and may not do."""

from scripts.database import DatabaseSettings as RoleSettings
from scripts.database import Role

__all__ = ["Role", "RoleSettings"]
