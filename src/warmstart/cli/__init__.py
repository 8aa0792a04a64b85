"""The `warmstart` command line."""
