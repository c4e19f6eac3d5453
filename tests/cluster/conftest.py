"""Load tests.cluster.plugin for these tests even before tests/conftest.py registers it.

import_plugin skips a plugin that is already registered, so the fixtures exist once.
"""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("tests.cluster.plugin")
