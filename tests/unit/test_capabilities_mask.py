"""Unit tests for ketch.runtime.capabilities: names, numbers and masks."""

from __future__ import annotations

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime.capabilities import NAMES, NUMBERS, last_cap, mask

TOP = len(NAMES) - 1


def test_kernel_order_of_names() -> None:
    assert NAMES[0] == "CAP_CHOWN"
    assert NAMES[5] == "CAP_KILL"
    assert NAMES[21] == "CAP_SYS_ADMIN"
    assert NAMES[24] == "CAP_SYS_RESOURCE"
    assert NAMES[40] == "CAP_CHECKPOINT_RESTORE"
    assert len(set(NAMES)) == len(NAMES)
    assert all(NUMBERS[name] == i for i, name in enumerate(NAMES))


@pytest.mark.parametrize(
    ("names", "bits"),
    [
        ((), 0),
        (("CAP_CHOWN",), 1),
        (("CHOWN",), 1),
        (("cap_chown",), 1),
        (("chown",), 1),
        (("Cap_Sys_Admin",), 1 << 21),
        (("CAP_KILL", "NET_BIND_SERVICE", "audit_write"), (1 << 5) | (1 << 10) | (1 << 29)),
        (("CAP_KILL", "KILL"), 1 << 5),
        (("CAP_CHECKPOINT_RESTORE",), 1 << 40),
    ],
)
def test_mask_with_and_without_prefix(names: tuple[str, ...], bits: int) -> None:
    assert mask(names, "process.capabilities.bounding", TOP) == bits


def test_every_name_maps_to_its_bit() -> None:
    assert mask(NAMES, "p", TOP) == (1 << len(NAMES)) - 1


@pytest.mark.parametrize("name", ["CAP_FOO", "FOO", "", "CAP_", "CAP_SYS_ADMIN2", "SYS ADMIN"])
def test_unknown_name_raises_with_path(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        mask(("CAP_KILL", name), "process.capabilities.effective", TOP)
    assert str(info.value) == f"process.capabilities.effective: unknown capability {name!r}"


def test_caps_above_top_are_dropped() -> None:
    assert mask(("CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"), "p", 5) == 1 | (1 << 5)
    assert mask(("CAP_BPF", "CAP_PERFMON"), "p", 37) == 0
    assert mask(("CAP_CHOWN",), "p", 0) == 1


def test_unknown_name_raises_even_above_top() -> None:
    with pytest.raises(InvalidArgument):
        mask(("CAP_NOPE",), "p", 0)


def test_last_cap_is_within_names() -> None:
    top = last_cap()
    assert 0 < top <= len(NAMES) - 1
