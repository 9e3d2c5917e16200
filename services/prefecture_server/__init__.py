"""prefecture_server — the 本人確認情報 of one prefecture's residents.

Consumes the changes its CSs send, keeps them with history, forwards them to
the national server, and serves prefectural affairs. The topology can remove
this tier (R-NET-4).
"""
