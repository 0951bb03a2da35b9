import base64
import random
import re

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
