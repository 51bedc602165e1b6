#!/bin/sh
# The on-instance watchdog armed at bootstrap: it ends this instance when deploy_and_analyze stops
# sending heartbeats (the laptop closed, the process was killed) or when the run's deadline passes,
# whatever the job is doing. It uses the least-privileged credential the provider offers (RunPod's
# pod-scoped key, Vast's container key, read from PID 1's environment), never the account key.
#
#   sh watchdog.sh CONFIG_FILE        (started detached: setsid nohup sh watchdog.sh CONF &)
#
# CONFIG_FILE holds KEY=VALUE lines, re-read on every tick so the orchestrator can extend the
# deadline (policy "keep for a TTL") or disarm it:
#   DEADLINE_UNIX=...            hard end of life
#   HEARTBEAT_FILE=...           touched by deploy_and_analyze while attached
#   HEARTBEAT_TIMEOUT_S=...      end the instance this long after the last heartbeat
#   ACTION=runpod|vast|command|none
#   INSTANCE_ID=...              the provider's id of this instance (else from PID 1's environment)
#   TERMINATE_COMMAND=...        for ACTION=command (the local rehearsal: its broker terminate)
#   RUNPOD_GRAPHQL_URL=...       optional (tests: the emulator); default https://api.runpod.io/graphql
#   VAST_API_URL=...             optional; default https://console.vast.ai
#   DISARMED=1                   the run ended and the policy keeps the instance without a deadline
#   TICK_S=10                    poll interval
# Log lines go to stdout (redirected to a file by the starter); the pid is in CONFIG_FILE.pid.
set -u
conf=${1:?usage: watchdog.sh CONFIG_FILE}
echo $$ > "$conf.pid"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) watchdog: $*"; }

# PID 1's environment: RunPod and Vast put the instance id and the scoped key there, and
# processes started over SSH do not inherit it.
pid1_env() { tr '\0' '\n' < /proc/1/environ 2>/dev/null | sed -n "s/^$1=//p" | head -n 1; }

terminate_once() {
  case "$ACTION" in
    runpod)
      pod=${INSTANCE_ID:-$(pid1_env RUNPOD_POD_ID)}
      key=$(pid1_env RUNPOD_API_KEY); key=${key:-${RUNPOD_API_KEY:-}}
      [ -n "$pod" ] || { log "no RUNPOD_POD_ID"; return 1; }
      if [ -z "${RUNPOD_GRAPHQL_URL:-}" ] && command -v runpodctl >/dev/null 2>&1; then
        RUNPOD_API_KEY=$key runpodctl remove pod "$pod"
      else
        hdr=$(mktemp); printf 'Authorization: Bearer %s\nContent-Type: application/json\n' "$key" > "$hdr"
        out=$(curl -sS -m 30 -H @"$hdr" -d "{\"query\":\"mutation { podTerminate(input: {podId: \\\"$pod\\\"}) }\"}" \
              "${RUNPOD_GRAPHQL_URL:-https://api.runpod.io/graphql}"); rc=$?; rm -f "$hdr"
        log "runpod answer: $out"
        [ $rc -eq 0 ] && ! printf '%s' "$out" | grep -q '"errors"'
      fi ;;
    vast)
      id=${INSTANCE_ID:-$(pid1_env CONTAINER_ID)}
      key=$(pid1_env CONTAINER_API_KEY); key=${key:-${CONTAINER_API_KEY:-}}
      [ -n "$id" ] || { log "no CONTAINER_ID"; return 1; }
      hdr=$(mktemp); printf 'Authorization: Bearer %s\n' "$key" > "$hdr"
      code=$(curl -sS -m 30 -o /dev/null -w '%{http_code}' -X DELETE -H @"$hdr" \
             "${VAST_API_URL:-https://console.vast.ai}/api/v0/instances/$id/"); rm -f "$hdr"
      log "vast answer: HTTP $code"
      case "$code" in 2*|404) return 0 ;; *) return 1 ;; esac ;;
    command)
      sh -c "$TERMINATE_COMMAND" ;;
    *)
      log "no self-terminate path on this provider; relying on the provider deadline and broker sweep"
      return 0 ;;
  esac
}

log "armed (config $conf)"
while :; do
  ACTION=none; INSTANCE_ID=; DEADLINE_UNIX=0; HEARTBEAT_FILE=; HEARTBEAT_TIMEOUT_S=600; TERMINATE_COMMAND=; DISARMED=0; TICK_S=10
  RUNPOD_GRAPHQL_URL=; VAST_API_URL=
  # The config lives on the instance; once it is gone, so is the instance (local rehearsal).
  if [ ! -f "$conf" ]; then log "config gone; exiting"; exit 0; fi
  # shellcheck disable=SC1090  # the orchestrator writes this file (KEY=VALUE, values quoted)
  . "$conf"
  [ -z "$RUNPOD_GRAPHQL_URL" ] && unset RUNPOD_GRAPHQL_URL
  if [ "$DISARMED" = 1 ]; then log "disarmed; exiting"; exit 0; fi
  now=$(date +%s)
  why=""
  if [ "$DEADLINE_UNIX" -gt 0 ] && [ "$now" -ge "$DEADLINE_UNIX" ]; then
    why="deadline $DEADLINE_UNIX passed"
  elif [ -n "$HEARTBEAT_FILE" ]; then
    if [ -f "$HEARTBEAT_FILE" ]; then
      last=$(date -r "$HEARTBEAT_FILE" +%s 2>/dev/null || echo "$now")
    else
      last=$(date -r "$conf" +%s 2>/dev/null || echo "$now")  # armed, no heartbeat yet
    fi
    if [ $((now - last)) -ge "$HEARTBEAT_TIMEOUT_S" ]; then why="no heartbeat for $((now - last))s"; fi
  fi
  if [ -n "$why" ]; then
    log "terminating this instance: $why"
    while ! terminate_once; do
      log "terminate failed; retrying in 60s"
      sleep 60
      # Still ours to end? The orchestrator may have come back and disarmed us meanwhile.
      if [ ! -f "$conf" ] || grep -q '^DISARMED=1' "$conf"; then log "disarmed while retrying; exiting"; exit 0; fi
    done
    log "terminate requested"
    exit 0
  fi
  sleep "$TICK_S"
done
