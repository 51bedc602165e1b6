"""Shared core of the provider API emulators: HTTP server, auth check, fault engine, request log,
state lock, latency, and the control API (/_emulator/...).

Each provider module (runpod.py, vast.py, lambda_cloud.py, primeintellect.py) subclasses Provider
and implements `route()` (classify a request: which action it is, which GraphQL operations it
carries), `handle()` (answer it from state), the auth check and failure shape, and the
provider-native bodies used by the faults. Everything here is standard library only.

Concurrency: ThreadingHTTPServer answers each connection on its own thread; every read or write of
emulator state happens under `Emulator.lock` (an RLock). Latency sleeps happen outside the lock so
a slow answer never blocks the control API or other requests.
"""

import json
import random
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTROL_PREFIX = "/_emulator/"

# Fault kinds every provider understands; providers add their own (see Provider.extra_fault_kinds).
COMMON_FAULT_KINDS = {
    "latency", "http_status", "capacity", "vanish_offer", "terminate_ignored_once",
    "drop_connection", "malformed_json", "instance_failed",
}

# Which request actions a fault kind applies to when its `match` does not narrow it further.
# None: any provider-API request.
FAULT_DEFAULT_ACTIONS = {
    "capacity": {"create"},
    "terminate_ignored_once": {"terminate"},
}

SECRET_HEADERS = {"authorization", "x-api-key", "cookie"}
SECRET_QUERY_PARAMS = {"api_key", "apikey", "key"}


class Request:
    """One provider-API request as the provider modules see it."""

    def __init__(self, method, path, query, headers, raw_body):
        self.method = method
        self.path = path                      # without the query string
        self.query = query                    # dict: name -> list of values (parse_qs)
        self.headers = headers                # dict, lower-case names
        self.raw_body = raw_body
        self.json = None
        self.json_error = None
        if raw_body:
            try:
                self.json = json.loads(raw_body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                self.json_error = str(e)
        # Filled by Provider.route():
        self.action = "other"                 # search | create | get | list | terminate | stop | start | other
        self.operations = []                  # GraphQL: operation name and root field names

    def q(self, name, default=None):
        values = self.query.get(name)
        return values[0] if values else default

    def bearer_or_basic_key(self, allow_basic=False):
        """The API key from `Authorization: Bearer K` (or Basic base64(K:) when allowed)."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if allow_basic and auth.lower().startswith("basic "):
            import base64
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            return decoded.split(":", 1)[0]
        return None


class Response:
    def __init__(self, status=200, body=None, headers=None, raw=None):
        self.status = status
        self.body = body                      # JSON-serialisable, or None with `raw`
        self.raw = raw                        # bytes sent as-is (malformed_json)
        self.headers = headers or {}

    def encoded(self):
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body).encode("utf-8")


class DropConnection(Exception):
    """Raised to close the socket without answering."""


class Provider:
    """Base class: one cloud's API. Subclasses override the hooks below."""

    name = "base"
    extra_fault_kinds = set()

    def __init__(self, emu):
        self.emu = emu                        # the Emulator (config, lock, rng, faults)

    # --- hooks -------------------------------------------------------------------------------
    def reset(self):
        raise NotImplementedError

    def route(self, req):
        """Set req.action (and req.operations for GraphQL)."""

    def handle(self, req, fired):
        """Answer `req` from state; `fired` is the list of faults consumed by this request that
        change behaviour rather than replace the answer (capacity, terminate_ignored_once, ...)."""
        raise NotImplementedError

    def extract_key(self, req):
        return req.bearer_or_basic_key()

    def needs_auth(self, req):
        return True

    def auth_failure(self, req, given):
        raise NotImplementedError

    def error_body(self, status, message):
        """The provider's error body for an injected http_status fault."""
        raise NotImplementedError

    def instances(self):
        """Provider-native records of the instances that still exist (and bill), for
        GET /_emulator/state. Reading them is not an observation: it never advances a lifecycle."""
        return []

    def terminated(self):
        """Records of terminated/destroyed instances, as last seen."""
        return []

    def on_fault_added(self, fault):
        """Validate a provider-specific fault when it is injected; raise ValueError to refuse."""

    def apply_vanish(self, offer_id):
        raise NotImplementedError


class Emulator:
    def __init__(self, provider_cls, api_key=None, latency_ms=0, seed=0):
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.seed = seed
        self.config = {
            "ssh_host": "127.0.0.1",
            "ssh_port": 22,
            "ssh_user": None,                 # None: the provider's documented user
            "api_key": api_key,
            "latency_ms": latency_ms,
            "boot_polls": 2,
            # Emulator-only: [{"port": N, "authorized_keys": PATH?}, ...]. The n-th created instance
            # is backed by entry n mod len (its own sshd, so instances do not share a home), and the
            # public key a create or key-attach sends is appended to that entry's authorized_keys, as
            # the real cloud installs it. Empty: every instance is ssh_host:ssh_port.
            "ssh_backends": [],
        }
        self.instances_created = 0
        self.faults = []                      # dicts with "remaining" and "fired" counters
        self.requests = []
        self.next_fault_id = 1
        self.provider = provider_cls(self)
        self.provider.reset()

    # --- instances backed by their own sshd (config ssh_backends) ------------------------------
    def assign_ssh_backend(self, inst):
        """Called once per created instance: records which backend serves its SSH port."""
        backends = self.config.get("ssh_backends") or []
        if backends:
            inst["ssh_backend"] = dict(backends[self.instances_created % len(backends)])
        self.instances_created += 1

    def ssh_port_of(self, inst):
        b = inst.get("ssh_backend")
        return b["port"] if b else self.config["ssh_port"]

    def install_public_key(self, inst, key):
        """What the cloud does with the key a create or attach carried: authorise it on the instance.
        Only one well-formed key line is written (the value comes from the client under test)."""
        b = inst.get("ssh_backend")
        if not b or not b.get("authorized_keys") or not isinstance(key, str):
            return
        line = key.strip()
        if not line.startswith("ssh-") or "\n" in line or "\r" in line or len(line) > 16384:
            return
        with open(b["authorized_keys"], "a") as f:
            f.write(line + "\n")

    # --- control API -------------------------------------------------------------------------
    def control(self, method, path, body):
        if method == "GET" and path == "/_emulator/state":
            with self.lock:
                return Response(200, {
                    "provider": self.provider.name,
                    "instances": self.provider.instances(),
                    "terminated": self.provider.terminated(),
                    "requests": list(self.requests),
                    "faults": [dict(f) for f in self.faults],
                    "config": {k: v for k, v in self.config.items() if k != "api_key"},
                })
        if method == "POST" and path == "/_emulator/config":
            if not isinstance(body, dict):
                return Response(400, {"error": "config body must be a JSON object"})
            known = set(self.config) | getattr(self.provider, "extra_config_keys", set())
            unknown = sorted(set(body) - known)
            if unknown:
                return Response(400, {"error": "unknown config keys: " + ", ".join(unknown),
                                      "known": sorted(known)})
            backends = body.get("ssh_backends", [])
            if not isinstance(backends, list) or not all(
                    isinstance(b, dict) and isinstance(b.get("port"), int) and set(b) <= {"port", "authorized_keys"}
                    and isinstance(b.get("authorized_keys", ""), str) for b in backends):
                return Response(400, {"error": 'ssh_backends is a list of {"port": N, "authorized_keys": PATH}'})
            with self.lock:
                self.config.update(body)
            return Response(200, {"ok": True})
        if method == "POST" and path == "/_emulator/faults":
            if not isinstance(body, dict) or not isinstance(body.get("faults"), list):
                return Response(400, {"error": 'faults body must be {"faults": [...]}'})
            added = []
            with self.lock:
                for f in body["faults"]:
                    try:
                        added.append(self._add_fault(f))
                    except ValueError as e:
                        return Response(400, {"error": str(e)})
            return Response(200, {"ok": True, "ids": added})
        if method == "POST" and path == "/_emulator/reset":
            with self.lock:
                self.faults.clear()
                self.requests.clear()
                self.instances_created = 0
                self.provider.reset()
            return Response(200, {"ok": True})
        return Response(404, {"error": "unknown control path " + method + " " + path})

    def _add_fault(self, f):
        if not isinstance(f, dict) or "kind" not in f:
            raise ValueError("each fault needs a kind")
        kind = f["kind"]
        if kind not in COMMON_FAULT_KINDS | self.provider.extra_fault_kinds:
            raise ValueError("fault kind %r is not supported by the %s emulator" % (kind, self.provider.name))
        match = f.get("match", {}) or {}
        if not isinstance(match, dict):
            raise ValueError("fault match must be an object")
        count = f.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise ValueError("fault count must be a positive integer")
        if kind == "http_status" and not isinstance(f.get("status"), int):
            raise ValueError("http_status fault needs an integer status")
        if kind == "http_status" and "body_base64" in f:
            import base64
            import binascii
            try:
                base64.b64decode(f["body_base64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ValueError("http_status body_base64 is not base64")
        if kind == "latency" and not isinstance(f.get("latency_ms"), (int, float)):
            raise ValueError("latency fault needs latency_ms")
        if kind == "vanish_offer" and "offer_id" not in f:
            raise ValueError("vanish_offer fault needs offer_id")
        self.provider.on_fault_added(f)
        fault = dict(f)
        fault["match"] = match
        fault["count"] = count
        fault["remaining"] = count
        fault["fired"] = 0
        fault["id"] = self.next_fault_id
        self.next_fault_id += 1
        self.faults.append(fault)
        return fault["id"]

    # --- fault engine ------------------------------------------------------------------------
    def _matches(self, fault, req):
        m = fault["match"]
        if "method" in m and m["method"].upper() != req.method:
            return False
        if "path_prefix" in m and not req.path.startswith(m["path_prefix"]):
            return False
        if "path" in m and req.path != m["path"]:
            return False
        if "operation" in m and m["operation"] not in req.operations:
            return False
        if "action" in m and m["action"] != req.action:
            return False
        defaults = FAULT_DEFAULT_ACTIONS.get(fault["kind"])
        if defaults is not None and "action" not in m and req.action not in defaults:
            return False
        return True

    def take_faults(self, req):
        """Consumes one use of every queued fault that matches `req` (first match per kind)."""
        taken = []
        seen = set()
        with self.lock:
            for fault in self.faults:
                if fault["remaining"] <= 0 or fault["kind"] in seen:
                    continue
                if self._matches(fault, req):
                    fault["remaining"] -= 1
                    fault["fired"] += 1
                    seen.add(fault["kind"])
                    taken.append(dict(fault))
        return taken

    # --- provider-API request ----------------------------------------------------------------
    def serve(self, req):
        """Returns a Response, or raises DropConnection."""
        self.provider.route(req)
        self._log(req)
        with self.lock:
            latency_s = (self.config.get("latency_ms") or 0) / 1000.0

        given = self.provider.extract_key(req)
        with self.lock:
            expected = self.config.get("api_key")
        authed = bool(given) and (expected is None or given == expected)
        if not authed and (given or self.provider.needs_auth(req)):
            _sleep(latency_s)
            return self.provider.auth_failure(req, given)

        faults = self.take_faults(req)
        for f in faults:
            if f["kind"] == "latency":
                latency_s += f["latency_ms"] / 1000.0
        _sleep(latency_s)
        for f in faults:
            kind = f["kind"]
            if kind == "drop_connection":
                raise DropConnection()
            if kind == "malformed_json":
                return Response(200, raw=b'{"data": {"truncated": [1, 2, ')
            if kind == "http_status":
                status = f["status"]
                headers = {}
                if "retry_after_s" in f:
                    headers["Retry-After"] = str(f["retry_after_s"])
                if "body_base64" in f:
                    # Arbitrary bytes (invalid UTF-8, NULs): what a broken proxy or a hostile server sends.
                    import base64
                    return Response(status, raw=base64.b64decode(f["body_base64"]), headers=headers)
                body = f.get("body")
                if body is None:
                    body = self.provider.error_body(status, f.get("message"))
                if isinstance(body, str):
                    return Response(status, raw=body.encode("utf-8"), headers=headers)
                return Response(status, body, headers=headers)
            if kind == "vanish_offer":
                with self.lock:
                    self.provider.apply_vanish(f["offer_id"])
        with self.lock:
            try:
                return self.provider.handle(req, faults)
            except (ValueError, TypeError) as e:
                # A query parameter or body field of the wrong type: the real APIs answer 400/422.
                import traceback
                traceback.print_exc()
                return Response(400, self.provider.error_body(400, "invalid request: %s" % e))

    def _log(self, req):
        headers = {}
        for k, v in req.headers.items():
            headers[k] = "<redacted>" if k in SECRET_HEADERS else v
        query = {}
        for k, v in req.query.items():
            query[k] = ["<redacted>"] * len(v) if k.lower() in SECRET_QUERY_PARAMS else v
        if req.json is not None:
            body = req.json
        elif req.raw_body:
            body = req.raw_body.decode("utf-8", "replace")
        else:
            body = None
        entry = {"method": req.method, "path": req.path, "query": query, "headers": headers,
                 "body": body, "action": req.action, "time": time.time()}
        if req.operations:
            entry["operations"] = list(req.operations)
        with self.lock:
            self.requests.append(entry)


def _sleep(seconds):
    if seconds > 0:
        time.sleep(seconds)


def make_handler(emu):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"         # keep-alive, as real API front ends do
        server_version = "emulator/1"

        def log_message(self, fmt, *args):    # quiet: the request log is in /_emulator/state
            pass

        def _read_body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _send(self, resp):
            data = resp.encoded()
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _dispatch(self):
            raw = self._read_body()
            parsed = urllib.parse.urlsplit(self.path)
            path = parsed.path
            if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
                try:
                    body = json.loads(raw.decode("utf-8")) if raw else {}
                except ValueError as e:
                    self._send(Response(400, {"error": "control body is not JSON: %s" % e}))
                    return
                self._send(emu.control(self.command, path, body))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = Request(self.command, path, urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                          headers, raw)
            try:
                resp = emu.serve(req)
            except DropConnection:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            except Exception as e:  # a bug in the emulator: answer 500 and say so
                import traceback
                traceback.print_exc()
                resp = Response(500, {"error": "emulator internal error: %r" % (e,)})
            self._send(resp)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    return Handler


def serve_forever(emu, port_file):
    import os
    import signal
    class Server(ThreadingHTTPServer):
        request_queue_size = 256      # a burst of parallel clients (benchmarks) must not hit SYN retries
        daemon_threads = True

    server = Server(("127.0.0.1", 0), make_handler(emu))
    port = server.server_address[1]
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, port_file)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.1)
    server.server_close()


# --- small helpers shared by providers --------------------------------------------------------

def new_id(rng, length=14, alphabet="abcdefghijklmnopqrstuvwxyz0123456789"):
    return "".join(rng.choice(alphabet) for _ in range(length))


def iso_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_iso(text):
    """ISO-8601 UTC datetime ('2026-04-15T00:00:00Z', with optional fraction/offset) -> epoch s."""
    import datetime
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


# The GPU models the catalogues are built from. Each provider renders these in its own names and
# units (and leaves out what that cloud does not rent). Prices are $/GPU-hour, on-demand, roughly
# 2026 list prices; spot is ~60% of on-demand.
GPU_MODELS = [
    # key,        vendor,  vram_gb, price, cpu_ram_gb_per_gpu, vcpus_per_gpu
    ("H100_80GB",  "nvidia", 80,  2.69, 125, 16),
    ("H200_141GB", "nvidia", 141, 3.59, 188, 16),
    ("A100_80GB",  "nvidia", 80,  1.64, 117, 12),
    ("A100_40GB",  "nvidia", 40,  1.19, 85,  10),
    ("RTX4090_24GB", "nvidia", 24, 0.59, 62, 8),
    ("L40S_48GB",  "nvidia", 48,  0.86, 94,  12),
    ("MI300X_192GB", "amd",  192, 2.49, 283, 24),
]
GPU_COUNTS = [1, 2, 4, 8]
