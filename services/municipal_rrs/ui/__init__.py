"""Counter staff screens (窓口業務画面) of the resident register, served under /staff (docs/staff-ui.md)."""
