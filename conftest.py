# Shared lab fixtures, one plugin module per area (each area's owner edits only its own module).
pytest_plugins = [
    "tests.lab.fx_lab",
    "tests.lab.fx_provision",
    "tests.lab.fx_backrest",
    "tests.lab.fx_migrate",
]
