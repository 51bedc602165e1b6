#!/bin/sh
# The on-instance watchdog armed at bootstrap: it ends this instance when deploy_and_analyze stops
# sending heartbeats (the laptop closed, the process was killed) or when the run's deadline passes,
# whatever the job is doing. What it does to end the instance is decided by broker (the provider's
# declared self-end), never here: this script knows no provider.
#
#   sh watchdog.sh CONFIG_FILE        (started detached: setsid nohup sh watchdog.sh CONF &)
#
# CONFIG_FILE holds KEY=VALUE lines (values quoted by deploy), re-read on every tick so the
# orchestrator can extend the deadline (policy "keep for a TTL") or disarm it:
#   DEADLINE_UNIX=...            hard end of life
#   HEARTBEAT_FILE=...           touched by deploy_and_analyze while attached
#   HEARTBEAT_TIMEOUT_S=...      end the instance this long after the last heartbeat
#   ACTION=request|command|none
#   INSTANCE_ID=...              the provider's id of this instance (for the log)
#   TERMINATE_COMMAND=...        ACTION=command: a shell command line that ends the instance
#   REQUEST_METHOD, REQUEST_URL, REQUEST_HEADERS (lines), REQUEST_BODY
#                                ACTION=request: broker's terminate request, complete (the instance
#                                id is already in it); it is sent exactly as given
#   REQUEST_KEY_ENV=...          the variable holding the instance-scoped key (read from PID 1's
#                                environment, else this process's), sent as a Bearer token
#   REQUEST_FAILURE_MARKER=...   a 2xx answer whose body contains this failed ("" for none)
#   REQUEST_GONE_STATUSES=...    HTTP statuses that mean "already gone" (space-separated)
#   DISARMED=1                   the run ended and the policy keeps the instance without a deadline
#   TICK_S=10                    poll interval
# Nothing from the config or the environment is ever pasted into JSON, GraphQL or a URL here: the
# body goes to curl from a file (--data-binary @file), the URL as one argument (--url).
# Log lines go to stdout (redirected to a file by the starter); the pid is in CONFIG_FILE.pid.
set -u
conf=${1:?usage: watchdog.sh CONFIG_FILE}
echo $$ > "$conf.pid"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) watchdog: $*"; }

# PID 1's environment: clouds put the scoped key there, and processes started over SSH do not
# inherit it. $1 is checked to be a variable name before it reaches sed.
pid1_env() { tr '\0' '\n' < /proc/1/environ 2>/dev/null | sed -n "s/^$1=//p" | head -n 1; }

send_request() {
  case "$REQUEST_KEY_ENV" in
    ''|[0-9]*|*[!A-Za-z0-9_]*) log "the key variable '$REQUEST_KEY_ENV' is not a variable name"; return 1 ;;
  esac
  key=$(pid1_env "$REQUEST_KEY_ENV"); [ -n "$key" ] || key=$(printenv "$REQUEST_KEY_ENV")
  [ -n "$key" ] || { log "no $REQUEST_KEY_ENV in PID 1's environment or ours"; return 1; }
  # A key is one token: anything else (a newline, a space) could start another header.
  case "$key" in
    *[!A-Za-z0-9_.~+/=-]*) log "$REQUEST_KEY_ENV holds characters a key does not have; not sending it"; return 1 ;;
  esac
  dir=$(mktemp -d) || return 1
  printf '%s\n' "$REQUEST_HEADERS" > "$dir/headers"
  printf 'Authorization: Bearer %s\n' "$key" >> "$dir/headers"
  set -- -sS -m 30 -o "$dir/answer" -w '%{http_code}' -X "$REQUEST_METHOD" -H "@$dir/headers"
  if [ -n "$REQUEST_BODY" ]; then
    printf '%s' "$REQUEST_BODY" > "$dir/body"
    set -- "$@" --data-binary "@$dir/body"
  fi
  code=$(curl "$@" --url "$REQUEST_URL"); rc=$?
  answer=$(head -c 300 "$dir/answer" 2>/dev/null | tr -d '\r\n')
  failed=0
  if [ -n "$REQUEST_FAILURE_MARKER" ] && grep -qF -- "$REQUEST_FAILURE_MARKER" "$dir/answer" 2>/dev/null; then failed=1; fi
  rm -rf "$dir"
  log "terminate request: curl exit $rc, HTTP $code: $answer"
  [ $rc -eq 0 ] || return 1
  case " $REQUEST_GONE_STATUSES " in *" $code "*) return 0 ;; esac
  case "$code" in 2??) [ $failed -eq 0 ] ;; *) return 1 ;; esac
}

terminate_once() {
  case "$ACTION" in
    request) send_request ;;
    command) sh -c "$TERMINATE_COMMAND" ;;
    *)
      log "no self-terminate path on this provider; relying on the provider deadline and broker sweep"
      return 0 ;;
  esac
}

log "armed (config $conf)"
while :; do
  ACTION=none; INSTANCE_ID=; DEADLINE_UNIX=0; HEARTBEAT_FILE=; HEARTBEAT_TIMEOUT_S=600; TERMINATE_COMMAND=; DISARMED=0; TICK_S=10
  REQUEST_METHOD=; REQUEST_URL=; REQUEST_HEADERS=; REQUEST_BODY=; REQUEST_KEY_ENV=; REQUEST_FAILURE_MARKER=; REQUEST_GONE_STATUSES=
  # The config lives on the instance; once it is gone, so is the instance (local rehearsal).
  if [ ! -f "$conf" ]; then log "config gone; exiting"; exit 0; fi
  # shellcheck disable=SC1090  # the orchestrator writes this file (KEY=VALUE, values quoted)
  . "$conf"
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
    log "terminating instance ${INSTANCE_ID:-?}: $why"
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
