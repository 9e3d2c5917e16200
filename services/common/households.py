"""Household provision rules shared by the national server and the CSs (pure)."""

from contracts.affairs import Item, Level
from services.common.provision import Grant, ProvisionRefused, authorise
from services.common.topology import Topology


def household_grant(topology: Topology, *, agency_id: str, affair_id: str) -> Grant:
    """Authorised household-based affair, or a refusal. The CS checks this itself too
    instead of trusting the national server (defence in depth)."""
    grant = authorise(topology, agency_id=agency_id, affair_id=affair_id, fields=None, level=Level.national, prefecture=None)
    if not grant.affair.household_based:
        raise ProvisionRefused("not-a-household-affair", f"the affair {affair_id} is not household-based")
    return Grant(agency=grant.agency, affair=grant.affair, items=household_items(grant))


def household_items(grant: Grant) -> tuple[Item, ...]:
    """What a household answer provides about each member."""
    base = (Item.name, Item.household)
    return ((Item.resident_code,) if grant.affair.requires_resident_code else ()) + base
