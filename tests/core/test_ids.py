"""Ids made in one worker never collide with another's, even when gunicorn forks every
worker from a master that imported the modules (and so took a tag) first."""

from __future__ import annotations

import os

from gateway.ids import process_tag


def test_a_forked_child_takes_a_tag_of_its_own() -> None:
    parent = process_tag()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its tag and leave at once
        os.write(write, process_tag().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child and child != parent
    assert process_tag() == parent
