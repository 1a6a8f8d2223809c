"""conftest.py - pytest fixtures: a fresh redis-server with kvsql per test."""
import pytest

from harness import Server


@pytest.fixture
def server():
    s = Server().start()
    yield s
    s.stop()
    assert "crashed by signal" not in s.log(), s.log()
    s.close()


@pytest.fixture
def r(server):
    """A client of the fresh server; replies as bytes."""
    return server.client()


@pytest.fixture
def servers():
    """Start any number of servers; every one is stopped at the end."""
    started = []

    def start(**kw):
        s = Server(**kw).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
    for s in started:
        assert "crashed by signal" not in s.log(), s.log()
        s.close()
