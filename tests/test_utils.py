"""deepdesc.utils.thread_pool: one pool per name and size per process, its initializer run, new after a fork."""

from __future__ import annotations

import os
import threading

import pytest

from deepdesc.utils import thread_pool


def test_one_pool_per_name_and_size_with_its_initializer():
    seen = threading.local()
    pool = thread_pool("test-pool", 2, lambda: setattr(seen, "ready", True))
    assert thread_pool("test-pool", 2) is pool
    assert thread_pool("test-pool", 3) is not pool and thread_pool("other-pool", 2) is not pool
    assert pool.submit(lambda: getattr(seen, "ready", False)).result() is True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_pool_of_its_own():
    pool = thread_pool("test-fork", 2)
    assert pool.submit(lambda: 1).result() == 1  # the parent's threads exist
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited pool has no threads; a new one must run the task
        try:
            child = thread_pool("test-fork", 2)
            ok = child is not pool and child.submit(lambda: 2).result(timeout=10) == 2
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read)
