"""Contracts: every message and request body that crosses a service boundary.

Everything here is plain pydantic v2 with no I/O. Models are strict (unknown
fields refused, strings length- and character-checked, identifiers
check-digit-validated) because every boundary of the network is an
allow-list: what does not fit a contract is refused, never guessed at.
"""
