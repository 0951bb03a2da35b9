import base64
import os
import random
import re
import time

from postroute.kit import ids


def test_encode_matches_base32hex_of_the_value() -> None:
    rng = random.Random(7)
    values = [0, 1, (1 << 128) - 1, *(rng.getrandbits(128) for _ in range(500))]
    for value in values:
        expected = base64.b32hexencode(value.to_bytes(20, "big")).decode()[6:]
        assert ids.encode(value) == expected


def test_ids_have_the_prefix_and_26_base32hex_characters() -> None:
    assert re.fullmatch(r"msg_[0-9A-V]{26}", ids.new_id(ids.MESSAGE))


def test_ids_sort_in_creation_order_within_a_millisecond() -> None:
    made = [ids.new_id(ids.EVENT) for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_random_parts_do_not_repeat_across_many_ids() -> None:
    # Random bits come from a buffer of OS randomness: each millisecond's first id takes
    # fresh bits, never bits an earlier id used.
    made = []
    for _ in range(50):
        made.append(ids.new_id(ids.EVENT))
        time.sleep(0.0011)  # a new millisecond: fresh random bits
    randoms = [m[-16:] for m in made]  # the 80 random bits
    assert len(set(randoms)) == len(randoms)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ids.new_id(ids.MESSAGE)  # the parent has random bytes and a last id
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then leave at once
        os.write(write, ids.new_id(ids.MESSAGE).encode())
        os._exit(0)
    os.close(write)
    mine = ids.new_id(ids.MESSAGE)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        childs = pipe.read().decode()
    assert childs != mine
    assert childs[-16:] != mine[-16:]
