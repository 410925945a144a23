"""Tasks: placeholder until this area lands."""
TASKS: list = []
