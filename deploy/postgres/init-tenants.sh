#!/usr/bin/env bash
# Generated from deploy/topology.yaml by `python -m services.deploy_compose`; do not edit.
# One database and one login role per tenant; no role can connect to another tenant's database,
# nor to postgres or template1, nor create temporary tables anywhere but in its own.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<-'SQL'
	revoke all on database postgres from public;
	revoke all on database template1 from public;
	SQL
tenant() {
  local name="$1" password="$2"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v name="$name" -v password="$password" <<-'SQL'
	create role :"name" with login nosuperuser nocreatedb nocreaterole password :'password';
	create database :"name" owner :"name";
	revoke all on database :"name" from public;
	grant connect on database :"name" to :"name";
	SQL
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$name" -v name="$name" <<-'SQL'
	revoke all on schema public from public;
	grant all on schema public to :"name";
	SQL
}
tenant provlog "${JUKINET_DBPW_PROVLOG}"
tenant national "${JUKINET_DBPW_NATIONAL}"
tenant pref_13 "${JUKINET_DBPW_PREF_13}"
tenant pref_27 "${JUKINET_DBPW_PREF_27}"
tenant cs_131016 "${JUKINET_DBPW_CS_131016}"
tenant cs_131130 "${JUKINET_DBPW_CS_131130}"
tenant cs_272035 "${JUKINET_DBPW_CS_272035}"
tenant rrs_131016 "${JUKINET_DBPW_RRS_131016}"
tenant rrs_131130 "${JUKINET_DBPW_RRS_131130}"
tenant rrs_272035 "${JUKINET_DBPW_RRS_272035}"
