"""Which node may compare which municipality's 本人確認情報 (the answering side of reconciliation)."""

import pytest

from services.common.reconciliation import holds_copies_of


@pytest.mark.parametrize(
    ("party", "municipality", "allowed"),
    [
        ("national", "131016", True),
        ("national", "272035", True),
        ("pref-13", "131016", True),
        ("pref-13", "272035", False),
        ("pref-27", "272035", True),
        ("cs-131016", "131016", True),
        ("cs-131016", "131130", False),
        ("rrs-131016", "131016", False),  # a register compares with its own CS on another route
        ("agency-pension-service", "131016", False),
        ("operator", "131016", False),
    ],
)
def test_a_node_compares_only_what_it_keeps_copies_of(party, municipality, allowed):
    assert holds_copies_of(party, municipality) is allowed
