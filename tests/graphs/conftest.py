"""The registry the graph tests validate against: every service, the debug ones too."""

from __future__ import annotations

import pytest

from apps.capabilities.registry import SERVICES_DIR, CapabilityRegistry


@pytest.fixture(scope="module")
def registry() -> CapabilityRegistry:
    return CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=True)
