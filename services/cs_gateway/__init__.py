"""cs_gateway — the communication server (CS) of one municipality.

It separates the municipal register from the network (R-NET-1): it accepts
only the fixed contract formats from its own RRS, refuses everything else
with a problem report (counted and recorded), keeps the municipality's
本人確認情報 with history, and forwards each change upward on Kafka.
"""
