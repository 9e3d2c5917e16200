"""provision_log — every provision record from every provider, and the
resident's view of them ("who received my data", R-LOG-1)."""
