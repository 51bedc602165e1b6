#!/bin/sh
# Fetch a Hugging Face Hub checkpoint onto the instance: config.json, the tokenizer, and every
# safetensors file (from model.safetensors.index.json, or the single model.safetensors), into a
# cache keyed by repo and revision. A complete download is marked and reused.
#
#   HF_TOKEN=... sh fetch_model.sh OWNER/NAME REVISION CACHE_DIR     (HF_TOKEN on the environment
#   from bifrost's stdin env block, never on a command line; HF_ENDPOINT overrides the Hub URL)
#
# The token goes to curl through a header file (mode 0600), so it never appears in argv (ps) or in
# logs. curl retries 429 and 5xx with backoff and honours Retry-After. A file is kept only whole
# (curl succeeded and the size is the one the Hub declares); .complete is written only when every
# file is. Prints "model_dir=<path>".
# Exit codes: 2 usage, 3 auth (401/403: gated or private repo), 6 network or a short file, 9 not found.
set -eu

repo=${1:?usage: fetch_model.sh OWNER/NAME REVISION CACHE_DIR}
rev=${2:?usage}
cache=${3:?usage}
endpoint=${HF_ENDPOINT:-https://huggingface.co}
case "$repo" in */*) ;; *) echo "fetch_model: $repo: not a Hugging Face id (owner/name)" >&2; exit 2 ;; esac
command -v curl >/dev/null 2>&1 || { echo "fetch_model: curl not found on the instance" >&2; exit 3; }

dir="$cache/models/$(printf '%s' "$repo" | sed 's|/|--|g')/$rev"
if [ -f "$dir/.complete" ]; then
  echo "fetch_model: $repo@$rev cached" >&2
  echo "model_dir=$dir"
  exit 0
fi
mkdir -p "$dir"
# Runs on one host share the cache (local provider, a Slurm work dir): one fetch per model at a
# time, else both curls resume into the same .part file. A waiter finds the checkpoint complete.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$dir/.lock"
  flock 9
  if [ -f "$dir/.complete" ]; then
    echo "fetch_model: $repo@$rev cached (fetched by a concurrent run)" >&2
    echo "model_dir=$dir"
    exit 0
  fi
fi
umask 077
hdr=$(mktemp)
trap 'rm -f "$hdr" "$dir/.headers"' EXIT
# Stopped (bifrost kill: TERM to the group, then KILL): leave at once, the part for the next run.
trap 'exit 143' TERM
trap 'exit 130' INT
printf 'User-Agent: outlier-toolkit/0.1\n' > "$hdr"
if [ -n "${HF_TOKEN:-}" ]; then printf 'Authorization: Bearer %s\n' "$HF_TOKEN" >> "$hdr"; fi

# The size the server declares for the whole of the file whose response headers (curl -D, every
# response of the redirect chain, perhaps of several attempts) are in $1: the Hub's X-Linked-Size (on
# the redirect of an LFS file), else the total of the last response's Content-Range (a resumed 206, a
# 416 "bytes */N"), else the last response's Content-Length when that is a 200; a value that is not
# a number of at most 20 digits is passed over. Empty when none is declared.
declared_size() {
  tr -d '\r' < "$1" | awk '
    function size(v) { return v ~ /^[0-9]+$/ && length(v) <= 20 }
    tolower($1) ~ /^http\// { code = $2; len = ""; range = "" }
    tolower($1) == "x-linked-size:" { linked = $2 }
    tolower($1) == "content-length:" { len = $2 }
    tolower($1) == "content-range:" { range = $3 }
    END {
      n = split(range, parts, "/")
      if (size(linked)) print linked
      else if (n == 2 && size(parts[2])) print parts[2]
      else if (code == "200" && size(len)) print len
    }' | sed -n '1s/^0*\([0-9]\)/\1/p'
}

# The entity tag of the file whose response headers are in $1: the Hub's X-Linked-Etag (on the
# redirect of an LFS file: its sha256), else the last response's ETag; quotes and a weak W/ dropped,
# only [A-Za-z0-9._:-] kept, at most 128 characters. Empty when none is given.
entity_tag() {
  tr -d '\r' < "$1" | awk '
    tolower($1) ~ /^http\// { etag = "" }
    tolower($1) == "x-linked-etag:" && linked == "" { linked = $2 }
    tolower($1) == "etag:" { etag = $2 }
    END { print (linked != "" ? linked : etag) }' | sed 's|^W/||' | tr -cd 'A-Za-z0-9._:-' | head -c 128
}

# get FILE [optional]: downloads $endpoint/$repo/resolve/$rev/FILE into $dir/FILE (resumable). The
# file is renamed into place only when curl succeeded and its size is the one the server declared:
# a cut transfer (curl prints the status it got even when the body stopped short) stays FILE.part,
# which the next run resumes, and never reaches .complete. A part is resumed only into the same
# file: the entity tag the file had when its first bytes were asked for is kept in FILE.part.etag
# (read with a HEAD before the transfer, so a transfer killed midway leaves it too), and a part
# whose tag is unknown, or differs from the file's now or from the transfer's answer (the revision moved to a new blob, e.g.
# `main`) would splice two files, so it is dropped and the file fetched anew. So is a part the
# server cannot resume (it ignores byte ranges: curl exit 33).
get() {
  file=$1; optional=${2:-}
  part="$dir/$file.part"
  attempt=1
  while :; do
    rm -f "$dir/.headers"
    curl -sS -I -L -H @"$hdr" --connect-timeout 20 --max-time 120 -D "$dir/.headers" -o /dev/null \
         "$endpoint/$repo/resolve/$rev/$file" 2>/dev/null || true
    now_tag=$(entity_tag "$dir/.headers" 2>/dev/null || true)
    old_tag=$(head -c 200 "$part.etag" 2>/dev/null || true)
    # (A HEAD that tells nothing keeps a tagged part: the transfer's own answer is checked below.)
    if [ -s "$part" ] && { [ -z "$old_tag" ] || { [ -n "$now_tag" ] && [ "$old_tag" != "$now_tag" ]; }; }; then
      if [ -z "$old_tag" ]; then why="no record of which version of the file it holds"
      else why="the file changed on the Hub since (entity tag $old_tag, now $now_tag)"; fi
      echo "fetch_model: $repo@$rev: $file: a partial file is here with $why: dropped, fetching anew" >&2
      rm -f "$part" "$part.etag"
    fi
    resumed=; [ -s "$part" ] && resumed=1
    if [ -z "$resumed" ]; then
      rm -f "$part.etag"
      if [ -n "$now_tag" ]; then printf '%s\n' "$now_tag" > "$part.etag"; fi
    fi
    old_tag=$(head -c 200 "$part.etag" 2>/dev/null || true)
    rc=0
    rm -f "$dir/.headers"
    code=$(curl -sS -L -H @"$hdr" --retry 8 --retry-delay 5 --retry-max-time 900 --retry-all-errors \
                --connect-timeout 20 -C - -D "$dir/.headers" -o "$part" -w '%{http_code}' \
                "$endpoint/$repo/resolve/$rev/$file" 2>"$dir/.curl.err") || rc=$?
    tag=$(entity_tag "$dir/.headers" 2>/dev/null || true)
    again=
    if [ "$rc" -eq 33 ] && [ -n "$resumed" ]; then
      again="the server cannot resume it (it ignores byte ranges)"
    elif [ -n "$old_tag" ] && [ -n "$tag" ] && [ "$tag" != "$old_tag" ]; then
      # Between the HEAD and the transfer, or across curl's own resumed retries.
      again="it changed on the Hub while being fetched (entity tag $old_tag, now $tag)"
    fi
    if [ -n "$again" ]; then
      rm -f "$part" "$part.etag"
      if [ "$attempt" -ge 2 ]; then
        echo "fetch_model: $repo@$rev: $file: $again, again; nothing kept, run again" >&2
        exit 6
      fi
      echo "fetch_model: $repo@$rev: $file: $again: the partial file is dropped and fetched anew" >&2
      attempt=$((attempt + 1))
      continue
    fi
    # A transfer the HEAD could not tag: the tag its own answer carried, for the next run's resume.
    if [ -z "$old_tag" ] && [ -f "$part" ] && [ -n "$tag" ]; then printf '%s\n' "$tag" > "$part.etag"; fi
    break
  done
  case "$code" in
    404) rm -f "$part" "$part.etag"; [ -n "$optional" ] && return 1
         echo "fetch_model: $repo@$rev: $file: not found (404); check the id and revision" >&2; exit 9 ;;
    401|403) rm -f "$part" "$part.etag"
         echo "fetch_model: $repo@$rev: $file: refused ($code); the repo is gated or private: accept its licence on the Hub and set HF_TOKEN" >&2; exit 3 ;;
  esac
  if [ "$rc" -ne 0 ]; then
    echo "fetch_model: $repo@$rev: $file: download failed after retries (curl exit $rc, HTTP ${code:-000}): $(head -c 2000 "$dir/.curl.err" 2>/dev/null); the part fetched so far stays in $part for the next run to resume" >&2
    exit 6
  fi
  case "$code" in
    200|206|416) ;;  # 416: the part already holds the whole file (checked below)
    *) echo "fetch_model: $repo@$rev: $file: HTTP ${code:-000} after retries: $(head -c 2000 "$dir/.curl.err" 2>/dev/null)" >&2; exit 6 ;;
  esac
  [ -f "$part" ] || { echo "fetch_model: $repo@$rev: $file: HTTP $code but nothing was written" >&2; exit 6; }
  want=$(declared_size "$dir/.headers" 2>/dev/null || true)
  have=$(wc -c < "$part" | tr -d ' ')
  if [ -n "$want" ] && [ "$have" != "$want" ]; then
    if [ "$code" = 416 ]; then
      # The server says the part reaches past the end: resuming can never mend it.
      rm -f "$part" "$part.etag"
      echo "fetch_model: $repo@$rev: $file: the partial file holds $have bytes but the file has $want; removed, run again to fetch it anew" >&2
    else
      echo "fetch_model: $repo@$rev: $file: got $have of $want bytes (the server ended the transfer early); the part stays in $part for the next run to resume" >&2
    fi
    exit 6
  fi
  mv "$part" "$dir/$file"
  rm -f "$part.etag"
  return 0
}

get config.json
get tokenizer.json optional || echo "fetch_model: no tokenizer.json (token-id input only)" >&2
get tokenizer_config.json optional || true
get generation_config.json optional || true
if get model.safetensors.index.json optional; then
  # The shard names are the distinct values of weight_map; sed keeps this free of python/jq.
  shards=$(tr ',' '\n' < "$dir/model.safetensors.index.json" | sed -n 's/.*"\([^"]*\.safetensors\)".*/\1/p' | sort -u)
  [ -n "$shards" ] || { echo "fetch_model: $repo: model.safetensors.index.json lists no shards" >&2; exit 6; }
  for s in $shards; do
    # A shard name is a file in this folder: the index is the server's word, not a path to follow.
    case "$s" in
      */*|.*) echo "fetch_model: $repo: model.safetensors.index.json names shard '$s', not a plain file name" >&2; exit 6 ;;
    esac
  done
  for s in $shards; do
    [ -f "$dir/$s" ] || { echo "fetch_model: $s" >&2; get "$s"; }
  done
else
  get model.safetensors
fi
touch "$dir/.complete"
echo "model_dir=$dir"
