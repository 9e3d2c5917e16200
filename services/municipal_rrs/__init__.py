"""municipal_rrs — the resident register (住民記録システム) of one municipality.

It holds every 住民票 item, its full history and the households. It talks
only to its own CS, and it opens every connection itself: nothing on the
network side can call into it.
"""
