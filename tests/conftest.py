"""conftest.py - pytest fixtures: fresh redis-server processes with kvsql.

Every server a test starts is stopped at its end, and the test fails if
the server crashed or a sanitizer (SANITIZE=1 builds) reported anything.
"""
import pytest

from cluster import Cluster
from harness import Server


@pytest.fixture
def servers():
    """start(**kw) starts a Server; every one is stopped at the end."""
    started = []

    def start(**kw):
        s = Server(**kw).start()
        started.append(s)
        return s

    yield start
    problems = [s.close() for s in reversed(started)]  # last first: some share a dir
    assert not any(problems), "\n".join(problems)


@pytest.fixture
def server(servers):
    return servers()


@pytest.fixture
def r(server):
    """A client of the fresh server; replies as bytes."""
    return server.client()


@pytest.fixture
def clusters():
    """make(**kw) starts a Cluster (tests/cluster.py) of one's own; all are
    stopped at the end and the test fails if a node crashed."""
    made = []

    def make(**kw):
        c = Cluster(**kw)
        made.append(c)
        return c

    yield make
    problems = [c.close() for c in made]
    assert not any(problems), "\n".join(problems)
