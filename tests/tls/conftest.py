"""Fixtures for the TLS / HTTP/2 / gRPC tests: a test PKI made once per session."""

from __future__ import annotations

import pytest

from tests.tls.helpers import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))
