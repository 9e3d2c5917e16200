"""national_server — the latest 本人確認情報 of every resident (全国サーバ).

Consumes identity changes from the prefecture servers (or directly from the
CSs without that tier), enforces one active registration per person, and
provides to agencies only for the affairs they are authorised for, recording
every provision.
"""
