"""The plugin's version (one home: the package, --version and pyproject read it)."""
VERSION = "0.2.0"
