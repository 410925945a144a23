"""Lab fixtures for this area (placeholder)."""
