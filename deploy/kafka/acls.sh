#!/usr/bin/env bash
# Generated from deploy/topology.yaml by `python -m services.deploy_compose`; do not edit.
# Run once by the kafka-acls container as the super user kafka-admin (client certificate):
# creates every topic and grants each principal exactly its ACLs (docs/security-broker.md).
# Idempotent: run it again after a change of the topology; ACLs no longer generated are removed by hand.
set -euo pipefail
BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
CONFIG="${KAFKA_ADMIN_CONFIG:-/etc/kafka/admin/client.properties}"
BIN=/opt/kafka/bin
topic() {
  "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --create --if-not-exists --topic "$1" --partitions 3 --replication-factor 1
}
# acl <principal> <operation> <topic>...
acl() {
  local principal="$1" operation="$2"; shift 2
  local args=()
  for name in "$@"; do args+=(--topic "$name"); done
  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --add --allow-principal "User:$principal" --operation "$operation" --resource-pattern-type literal "${args[@]}" >/dev/null
}
topic jukinet.provisions
topic jukinet.deadletter
topic jukinet.national.identity
topic jukinet.push.pension-service
topic jukinet.push.mofa-passport
topic jukinet.push.mhlw-employment
topic jukinet.push.cfa-child-allowance
topic jukinet.push.tokyo-police-license
topic jukinet.push.osaka-welfare
topic jukinet.pref.13.identity
topic jukinet.pref.27.identity
topic jukinet.cs.131016.inbox
topic jukinet.cs.131130.inbox
topic jukinet.cs.272035.inbox
acl agency-cfa-child-allowance Read jukinet.push.cfa-child-allowance
acl agency-mhlw-employment Read jukinet.push.mhlw-employment
acl agency-mofa-passport Read jukinet.push.mofa-passport
acl agency-osaka-welfare Read jukinet.push.osaka-welfare
acl agency-pension-service Read jukinet.push.pension-service
acl agency-tokyo-police-license Read jukinet.push.tokyo-police-license
acl cs-131016 Create jukinet.cs.131016.inbox jukinet.cs.131130.inbox jukinet.cs.272035.inbox jukinet.deadletter jukinet.pref.13.identity jukinet.provisions
acl cs-131016 Read jukinet.cs.131016.inbox
acl cs-131016 Write jukinet.cs.131130.inbox jukinet.cs.272035.inbox jukinet.deadletter jukinet.pref.13.identity jukinet.provisions
acl cs-131130 Create jukinet.cs.131016.inbox jukinet.cs.131130.inbox jukinet.cs.272035.inbox jukinet.deadletter jukinet.pref.13.identity jukinet.provisions
acl cs-131130 Read jukinet.cs.131130.inbox
acl cs-131130 Write jukinet.cs.131016.inbox jukinet.cs.272035.inbox jukinet.deadletter jukinet.pref.13.identity jukinet.provisions
acl cs-272035 Create jukinet.cs.131016.inbox jukinet.cs.131130.inbox jukinet.cs.272035.inbox jukinet.deadletter jukinet.pref.27.identity jukinet.provisions
acl cs-272035 Read jukinet.cs.272035.inbox
acl cs-272035 Write jukinet.cs.131016.inbox jukinet.cs.131130.inbox jukinet.deadletter jukinet.pref.27.identity jukinet.provisions
acl national Create jukinet.deadletter jukinet.national.identity jukinet.provisions jukinet.push.cfa-child-allowance jukinet.push.mhlw-employment jukinet.push.mofa-passport jukinet.push.osaka-welfare jukinet.push.pension-service jukinet.push.tokyo-police-license
acl national Read jukinet.national.identity
acl national Write jukinet.deadletter jukinet.provisions jukinet.push.cfa-child-allowance jukinet.push.mhlw-employment jukinet.push.mofa-passport jukinet.push.osaka-welfare jukinet.push.pension-service jukinet.push.tokyo-police-license
acl pref-13 Create jukinet.deadletter jukinet.national.identity jukinet.pref.13.identity jukinet.provisions
acl pref-13 Read jukinet.pref.13.identity
acl pref-13 Write jukinet.deadletter jukinet.national.identity jukinet.provisions
acl pref-27 Create jukinet.deadletter jukinet.national.identity jukinet.pref.27.identity jukinet.provisions
acl pref-27 Read jukinet.pref.27.identity
acl pref-27 Write jukinet.deadletter jukinet.national.identity jukinet.provisions
acl provision-log Create jukinet.deadletter jukinet.provisions
acl provision-log Read jukinet.provisions
acl provision-log Write jukinet.deadletter
echo "topics and ACLs set"
