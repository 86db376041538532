"""A database made by the code before issue 16's restructuring (legacy_tables.json) and the
script that made it; tests/test_legacy_upgrade.py upgrades a copy of it to today's migrations."""
