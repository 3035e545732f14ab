"""SourceRegistry (in-process EVM): derived addresses, owner-only changes, events, confirmations."""

from __future__ import annotations

import boa
import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from gridtask.chain import artifact

BUNDLE = bytes.fromhex("ab" * 32)
OTHER_BUNDLE = bytes.fromhex("cd" * 32)
FIRST, MANUAL = 1, 0
TERMS = (BUNDLE, "summarizer", "sums numbers", "https://x/logo.png", 1, 10**15, 0, 600, FIRST)


@pytest.fixture
def registry():
    return boa.load_partial(str(artifact.CONTRACTS_DIR / "SourceRegistry.vy")).deploy()


def _owner(tag: str) -> str:
    address = boa.env.generate_address(tag)
    boa.env.set_balance(address, 10**21)
    return address


def _events(logs: list, name: str) -> list:
    """The decoded logs of one event (boa names each log's type after its event)."""
    return [e for e in logs if type(e).__name__ == name]


def test_register_derives_the_address_and_stores_the_terms(registry) -> None:
    owner = _owner("owner")
    with boa.env.prank(owner):
        first = registry.registerSource(*TERMS)
        logs = registry.get_logs()
        second = registry.registerSource(*TERMS)
    expected = keccak(encode(["address", "address", "uint256"], [registry.address, owner, 0]))[12:]
    assert first == to_checksum_address(expected) == registry.sourceAddress(owner, 0)
    assert second == registry.sourceAddress(owner, 1) != first
    entry = registry.sources(first)
    assert entry.owner == owner and entry.bundleHash == BUNDLE and entry.name == "summarizer"
    assert entry.minPayment == 10**15 and entry.maxExpiryDuration == 600
    assert entry.deliveryMethod == FIRST and entry.status == 0  # ACTIVE
    published = _events(logs, "SourcePublished")
    assert len(published) == 1
    assert published[0].source == first and published[0].owner == owner
    assert published[0].bundleHash == BUNDLE


def test_only_the_owner_updates_or_inactivates(registry) -> None:
    owner, stranger = _owner("owner"), _owner("stranger")
    with boa.env.prank(owner):
        source = registry.registerSource(*TERMS)
    with boa.env.prank(stranger), boa.reverts("sources: not the owner"):
        registry.updateSource(source, OTHER_BUNDLE, *TERMS[1:])
    with boa.env.prank(stranger), boa.reverts("sources: not the owner"):
        registry.inactivateSource(source)
    with boa.env.prank(owner):
        registry.updateSource(source, OTHER_BUNDLE, "summarizer2", "d", "", 1, 5, 0, 60, MANUAL)
        updated = _events(registry.get_logs(), "SourceUpdated")
    assert registry.sources(source).bundleHash == OTHER_BUNDLE
    assert registry.sources(source).deliveryMethod == MANUAL and registry.sources(source).minPayment == 5
    assert updated and updated[0].bundleHash == OTHER_BUNDLE
    with boa.env.prank(owner):
        registry.inactivateSource(source)
        inactivated = _events(registry.get_logs(), "SourceInactivated")
    assert inactivated and inactivated[0].source == source
    assert registry.sources(source).status == 1  # INACTIVE
    with boa.env.prank(owner), boa.reverts("sources: inactive"):
        registry.updateSource(source, BUNDLE, *TERMS[1:])
    with boa.env.prank(owner), boa.reverts("sources: inactive"):
        registry.inactivateSource(source)


@pytest.mark.parametrize(("index", "value", "reason"), [
    (0, bytes(32), "sources: empty bundle hash"),
    (1, "", "sources: empty name"),
    (8, 2, "sources: unknown delivery method"),
    (4, 8, "sources: unknown environment"),
    (7, 0, "sources: zero max expiry"),
])
def test_bad_terms_are_refused(registry, index, value, reason) -> None:
    terms = list(TERMS)
    terms[index] = value
    with boa.env.prank(_owner("owner")), boa.reverts(reason):
        registry.registerSource(*terms)


def test_unknown_source_is_refused(registry) -> None:
    with boa.env.prank(_owner("owner")), boa.reverts("sources: unknown source"):
        registry.inactivateSource(boa.env.generate_address("nothing"))


def test_the_first_confirmation_of_a_creators_task_stands(registry) -> None:
    creator, other = _owner("creator"), _owner("other")
    task, response, later = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    with boa.env.prank(creator):
        registry.confirmResponse(task, response)
        logs = _events(registry.get_logs(), "ResponseConfirmed")
        with boa.reverts("sources: already confirmed"):
            registry.confirmResponse(task, later)
    assert registry.confirmedResponse(creator, task) == response
    assert logs[0].task == task and logs[0].creator == creator
    with boa.env.prank(other):  # keyed by the caller: another account cannot confirm for the creator
        registry.confirmResponse(task, later)
    assert registry.confirmedResponse(creator, task) == response
