"""Vast.ai emulator: the REST API under /api/v0 (and the paginated list under /api/v1),
docs/providers.md#vastai.

Emulated: offer search (POST /api/v0/bundles/ flat filter body, GET /api/v0/bundles/?q=JSON,
PUT /api/v0/search/asks/ {"q":...}) with the query operators eq/neq/gt/gte/lt/lte/in/notin,
`order`, `limit`, `type`, `allocated_storage`; create PUT /api/v0/asks/{id}/; list
GET /api/v0/instances/ and GET /api/v1/instances/ (limit/after_token); show GET /api/v0/instances/{id}/;
stop/start/label PUT /api/v0/instances/{id}/; destroy DELETE /api/v0/instances/{id}/; account and
per-instance SSH keys.

Behaviour worth knowing (docs/providers.md, "Traps" 1-4):
- Units: gpu_ram / gpu_total_ram / cpu_ram in MB (the two hosts of a GPU model report slightly
  different MB), disk_space in GB, dph_total = $/hr for the whole offer INCLUDING storage at the
  search's allocated_storage (default 5 GB).
- A non-null "price" in the create body rents a bid (interruptible) instance at that $/hr
  (is_bid true); a price below the offer's min_bid fails with success:false BUT still returns the
  new_contract of a stopped instance that keeps existing until destroyed.
- An ask can be rented once: a second create on it (or on a vanished offer) is 404 no_such_ask;
  destroying the instance frees it.
- actual_status is null on the first observation, then "loading", then "running" (with
  ports["22/tcp"][0].HostPort as a STRING); show answers {"instances": {...}} or {"instances": null}.
"""

import time

from core import GPU_COUNTS, GPU_MODELS, Provider, Response

# key -> (gpu_name, base MB per GPU, compute_cap, cuda_max_good)
VAST_GPUS = {
    "H100_80GB": ("H100 SXM", 81559, 900, 12.8),
    "H200_141GB": ("H200", 143771, 900, 12.8),
    "A100_80GB": ("A100 SXM4", 81920, 800, 12.6),
    "A100_40GB": ("A100 PCIE", 40960, 800, 12.4),
    "RTX4090_24GB": ("RTX 4090", 24564, 890, 12.8),
    "L40S_48GB": ("L40S", 46068, 890, 12.6),
    "MI300X_192GB": ("MI300X", 196608, 0, 0.0),
}

HOSTS = [
    # host_id, geolocation, verified, hosting_type, reliability2, price factor, MB factor
    (81234, "Austin, TX, US", True, 1, 0.998, 1.0, 1.0),
    (64512, "Warsaw, PL", False, 0, 0.962, 0.82, 0.995),
]

SEARCH_RESERVED = {"order", "type", "allocated_storage", "limit", "disable_bundling", "extra_ids",
                   "show_incompatible", "select_cols"}
ALIASES = {"dph": "dph_total", "cuda_vers": "cuda_max_good"}
STORAGE_COST = 0.15  # $/GB/month


def _coerce(have, want):
    if isinstance(have, bool):
        if isinstance(want, str):
            return want.lower() == "true"
        return bool(want)
    if isinstance(have, (int, float)) and not isinstance(want, bool):
        try:
            return float(want)
        except (TypeError, ValueError):
            return want
    if isinstance(have, str) and want is not None:
        return str(want)
    return want


def _test(have, op, want):
    if op in ("in", "notin"):
        items = want if isinstance(want, list) else [want]
        hit = any(have == _coerce(have, w) for w in items)
        return hit if op == "in" else not hit
    w = _coerce(have, want)
    if op == "eq":
        return have == w
    if op == "neq":
        return have != w
    if have is None or w is None:
        return False
    try:
        if op == "gt":
            return have > w
        if op == "gte":
            return have >= w
        if op == "lt":
            return have < w
        if op == "lte":
            return have <= w
    except TypeError:
        return False
    raise ValueError("unknown operator %r" % op)


class Vast(Provider):
    name = "vast"
    # filler_offers: N extra verified asks (RTX 3060, cheaper than every catalogue offer) that a
    # search returns as well, as the real market's many cheap consumer cards do: with N above a
    # search's `limit`, a query that pushes no filter never sees the catalogue's own offers.
    extra_config_keys = {"filler_offers"}

    def reset(self):
        self.offers = {}
        self.instances_by_id = {}
        self.destroyed = []
        self.vanished = set()
        self.account_keys = []
        self.next_contract = 7835610
        n = 0
        for key, vendor, vram, price, ram, vcpu in GPU_MODELS:
            gpu_name, mb, cc, cuda = VAST_GPUS[key]
            for count in GPU_COUNTS:
                for host_id, geo, verified, hosting, rel, pf, mbf in HOSTS:
                    n += 1
                    ask = 10000000 + n * 37
                    per_gpu_mb = int(mb * mbf)
                    base = round(price * pf * count * 0.95, 4)
                    self.offers[ask] = {
                        "id": ask, "ask_contract_id": ask, "bundle_id": 500000 + n,
                        "machine_id": 30000 + n, "host_id": host_id,
                        "num_gpus": count, "gpu_name": gpu_name, "gpu_ram": per_gpu_mb,
                        "gpu_total_ram": per_gpu_mb * count, "gpu_arch": vendor,
                        "gpu_frac": 1.0, "gpu_display_active": False,
                        "dph_base": base, "min_bid": round(base * 0.55, 4),
                        "storage_cost": STORAGE_COST, "inet_up_cost": 0.005, "inet_down_cost": 0.005,
                        "cuda_max_good": cuda, "driver_version": "570.124.06" if vendor == "nvidia" else "6.10.5",
                        "compute_cap": cc, "cpu_cores": vcpu * count * 2, "cpu_cores_effective": float(vcpu * count),
                        "cpu_name": "AMD EPYC 9554 64-Core Processor", "cpu_ram": ram * count * 1024,
                        "disk_space": 500.0 * count, "disk_bw": 3500.0, "direct_port_count": 100,
                        "geolocation": geo, "reliability": rel, "reliability2": rel,
                        "verification": "verified" if verified else "unverified", "verified": verified,
                        "hosting_type": hosting, "external": False, "rentable": True, "rented": False,
                        "public_ipaddr": "127.0.0.1", "inet_up": 2000.0, "inet_down": 2000.0,
                        "static_ip": verified, "score": round(100 * rel / max(base, 0.01), 2),
                    }

    # --- routing and auth -------------------------------------------------------------------
    def route(self, req):
        p, m = req.path, req.method
        if p in ("/api/v0/bundles/", "/api/v0/bundles", "/api/v0/search/asks/"):
            req.action = "search"
        elif p.startswith("/api/v0/asks/") and m == "PUT":
            req.action = "create"
        elif p in ("/api/v0/instances/", "/api/v1/instances/", "/api/v0/instances", "/api/v1/instances"):
            req.action = "list"
        elif p.startswith("/api/v0/instances/") and self._instance_id(p) is not None:
            if m == "GET":
                req.action = "get"
            elif m == "DELETE":
                req.action = "terminate"
            elif m == "PUT":
                state = (req.json or {}).get("state") if isinstance(req.json, dict) else None
                req.action = {"stopped": "stop", "running": "start"}.get(state, "other")

    @staticmethod
    def _instance_id(path):
        parts = [x for x in path.split("/") if x]
        # api v0 instances {id} [ssh]
        if len(parts) >= 4 and parts[2] == "instances":
            try:
                return int(parts[3])
            except ValueError:
                return None
        return None

    def auth_failure(self, req, given):
        return Response(401, {"success": False, "error": "invalid_user_key",
                              "msg": "Invalid user key or api key not provided."})

    def error_body(self, status, message):
        if status == 429:
            return {"success": False, "error": "rate_limited",
                    "msg": message or "API requests too frequent, slow down."}
        return {"success": False, "error": "server_error" if status >= 500 else "invalid_args",
                "msg": message or "Request failed with status %d" % status}

    def apply_vanish(self, offer_id):
        self.vanished.add(int(offer_id))

    def instances(self):
        return [self._view(i) for i in self.instances_by_id.values()]

    def terminated(self):
        return list(self.destroyed)

    # --- handling ---------------------------------------------------------------------------
    def handle(self, req, fired):
        kinds = {f["kind"]: f for f in fired}
        p, m = req.path, req.method
        body = req.json if isinstance(req.json, dict) else {}
        if req.action == "search":
            if p == "/api/v0/search/asks/":
                flt = body.get("q") or {}
            elif m == "GET":
                import json
                try:
                    flt = json.loads(req.q("q", "{}"))
                except ValueError:
                    return Response(400, {"success": False, "error": "invalid_args", "msg": "q is not JSON"})
            else:
                flt = body
            return self._search(flt)
        if req.action == "create":
            return self._create(p, body, kinds)
        if req.action == "list":
            return self._list(req, kinds)
        iid = self._instance_id(p)
        if iid is not None:
            inst = self.instances_by_id.get(iid)
            if p.rstrip("/").endswith("/ssh") and m == "POST":
                if inst is None:
                    return self._no_such_instance(iid)
                inst["ssh_keys"].append(body.get("ssh_key"))
                self.emu.install_public_key(inst, body.get("ssh_key"))
                return Response(200, {"success": True, "msg": "SSH key attached."})
            if m == "GET":
                if inst is None:
                    return Response(200, {"instances": None})
                self._observe(inst)
                self._apply_kinds(kinds, [inst])
                return Response(200, {"instances": self._view(inst)})
            if m == "DELETE":
                if inst is None:
                    return self._no_such_instance(iid)
                if "terminate_ignored_once" not in kinds:
                    self.destroyed.append(self._view(inst))
                    del self.instances_by_id[iid]
                    if inst["ask"] in self.offers:
                        self.offers[inst["ask"]]["rented"] = False
                return Response(200, {"success": True})
            if m == "PUT":
                if inst is None:
                    return self._no_such_instance(iid)
                if "label" in body:
                    inst["label"] = body["label"]
                state = body.get("state")
                if state == "stopped":
                    inst["intended"] = "stopped"
                elif state == "running":
                    inst["intended"] = "running"
                    inst["polls"] = 0
                    inst["failed"] = False
                elif state is not None:
                    return Response(400, {"success": False, "error": "invalid_args",
                                          "msg": "state must be running or stopped"})
                return Response(200, {"success": True})
        if p in ("/api/v0/ssh/", "/api/v0/ssh"):
            if m == "POST":
                key = {"id": len(self.account_keys) + 1, "public_key": body.get("ssh_key"),
                       "created_at": time.time()}
                self.account_keys.append(key)
                return Response(200, {"success": True, "key": key})
            if m == "GET":
                return Response(200, list(self.account_keys))
        return Response(404, {"success": False, "error": "not_found", "msg": "Unknown endpoint %s %s" % (m, p)})

    def _no_such_instance(self, iid):
        return Response(404, {"success": False, "error": "no_such_instance",
                              "msg": "Instance %d not found." % iid})

    def _search(self, flt):
        if not isinstance(flt, dict):
            return Response(400, {"success": False, "error": "invalid_args", "msg": "query must be an object"})
        storage = float(flt.get("allocated_storage") or 5.0)
        out = []
        for offer in list(self.offers.values()) + self._fillers():
            if offer["id"] in self.vanished:
                continue
            o = dict(offer)
            storage_hr = STORAGE_COST * storage / (30 * 24)
            o["dph_total"] = round(o["dph_base"] + storage_hr, 6)
            o["search"] = {"totalHour": o["dph_total"], "gpuCostPerHour": o["dph_base"],
                           "diskHour": round(storage_hr, 6)}
            ok = True
            for key, cond in flt.items():
                if key in SEARCH_RESERVED:
                    continue
                key = ALIASES.get(key, key)
                if key not in o:
                    continue  # unknown columns are ignored, not an error
                conds = cond if isinstance(cond, dict) else {"eq": cond}
                for op, want in conds.items():
                    try:
                        if not _test(o[key], op, want):
                            ok = False
                    except ValueError as e:
                        return Response(400, {"success": False, "error": "invalid_args", "msg": str(e)})
            if ok:
                out.append(o)
        for col, direction in reversed(flt.get("order") or []):
            col = ALIASES.get(col, col)
            out.sort(key=lambda o: (o.get(col) is None, o.get(col)), reverse=(direction == "desc"))
        limit = flt.get("limit")
        if limit is not None:
            out = out[:int(limit)]
        return Response(200, {"offers": out})

    def _fillers(self):
        n = int(self.emu.config.get("filler_offers") or 0)
        if getattr(self, "_filler_cache", (None, None))[0] != n:
            template = next(iter(self.offers.values()))
            fillers = []
            for k in range(n):
                o = dict(template)
                o.update({"id": 20000000 + k, "ask_contract_id": 20000000 + k, "num_gpus": 1,
                          "gpu_name": "RTX 3060", "gpu_ram": 12288, "gpu_total_ram": 12288, "gpu_arch": "nvidia",
                          "dph_base": 0.03, "min_bid": 0.02, "verified": True, "rentable": True, "rented": False})
                fillers.append(o)
            self._filler_cache = (n, fillers)
        return self._filler_cache[1]

    def _create(self, path, body, kinds):
        parts = [x for x in path.split("/") if x]
        try:
            ask = int(parts[3])
        except (IndexError, ValueError):
            return Response(400, {"success": False, "error": "invalid_args", "msg": "bad ask id"})
        offer = self.offers.get(ask)
        if "capacity" in kinds or offer is None or ask in self.vanished or offer["rented"]:
            return Response(404, {"success": False, "error": "no_such_ask",
                                  "msg": "Instance type by id %d is not available." % ask})
        if not body.get("image"):
            return Response(400, {"success": False, "error": "invalid_args", "msg": "image is required"})
        price = body.get("price")
        contract = self.next_contract
        self.next_contract += 1
        env = body.get("env") or {}
        inst = {
            "id": contract, "ask": ask, "offer": offer, "body": body, "label": body.get("label"),
            "is_bid": price is not None, "price": price, "polls": 0, "intended": "running",
            "failed": "instance_failed" in kinds, "start_date": time.time(), "ssh_keys": [],
            "env": env if isinstance(env, dict) else {},
        }
        offer["rented"] = True
        self.emu.assign_ssh_backend(inst)
        self.instances_by_id[contract] = inst
        if price is not None and float(price) < offer["min_bid"]:
            # Trap 4 (docs/providers.md, "Traps"): the bid failed, yet a stopped instance exists and is returned.
            inst["intended"] = "stopped"
            inst["outbid"] = True
            return Response(200, {"success": False, "error": "insufficient_bid",
                                  "msg": "Your bid of %.4f is below the minimum bid %.4f for ask %d."
                                         % (float(price), offer["min_bid"], ask),
                                  "new_contract": contract})
        return Response(200, {"success": True, "new_contract": contract,
                              "instance_api_key": "scoped-%d" % contract})

    def _list(self, req, kinds):
        insts = sorted(self.instances_by_id.values(), key=lambda i: i["id"])
        for i in insts:
            self._observe(i)
        self._apply_kinds(kinds, insts)
        if req.path.startswith("/api/v1/"):
            limit = int(req.q("limit", "25"))
            after = req.q("after_token")
            if after:
                insts = [i for i in insts if i["id"] > int(after)]
            page = insts[:limit]
            token = str(page[-1]["id"]) if len(insts) > limit else None
            return Response(200, {"instances": [self._view(i) for i in page], "next_token": token})
        return Response(200, {"instances": [self._view(i) for i in insts]})

    def _observe(self, inst):
        inst["polls"] += 1

    def _apply_kinds(self, kinds, insts):
        if "instance_failed" in kinds:
            for i in insts:
                i["failed"] = True

    def _status(self, inst):
        if inst["failed"]:
            return "exited"
        if inst["intended"] == "stopped":
            return "exited"
        boot = self.emu.config["boot_polls"]
        if inst["polls"] <= 1 and boot >= 1:
            return None
        if inst["polls"] <= boot:
            return "loading"
        return "running"

    def _view(self, inst):
        cfg = self.emu.config
        o = inst["offer"]
        status = self._status(inst)
        running = status == "running"
        ports = {}
        if running:
            ports = {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(self.emu.ssh_port_of(inst))}]}
            for k in inst["env"]:
                if k.startswith("-p "):
                    inner = k.split()[1].split(":")[-1]
                    ports["%s/tcp" % inner] = [{"HostIp": "0.0.0.0", "HostPort": str(40000 + int(inner) % 1000)}]
        dph = float(inst["price"]) if inst["is_bid"] else round(o["dph_base"] + STORAGE_COST * float(
            inst["body"].get("disk") or 10) / (30 * 24), 6)
        body = inst["body"]
        return {
            "id": inst["id"], "machine_id": o["machine_id"], "host_id": o["host_id"],
            "actual_status": status, "intended_status": inst["intended"],
            "cur_state": "running" if running else "stopped",
            "next_state": "stopped" if inst["intended"] == "stopped" else "running",
            "status_msg": ("Error response from daemon: failed to create task for container: OCI runtime "
                           "create failed" if inst["failed"] else
                           ("success, running %s" % body.get("image") if running else "Pulling image")),
            "label": inst["label"], "num_gpus": o["num_gpus"], "gpu_name": o["gpu_name"],
            "gpu_ram": o["gpu_ram"], "gpu_totalram": o["gpu_total_ram"], "gpu_arch": o["gpu_arch"],
            "gpu_util": 0.0 if running else None, "cpu_ram": o["cpu_ram"], "cpu_cores": o["cpu_cores"],
            "disk_space": float(body.get("disk") or 10), "dph_base": o["dph_base"], "dph_total": dph,
            "is_bid": inst["is_bid"], "min_bid": o["min_bid"], "geolocation": o["geolocation"],
            "ssh_host": cfg["ssh_host"], "ssh_port": self.emu.ssh_port_of(inst), "ssh_idx": "5",
            "public_ipaddr": cfg["ssh_host"], "ports": ports, "local_ipaddrs": "10.0.0.5 172.17.0.1",
            "direct_port_start": 40000, "direct_port_end": 40999,
            "image_uuid": body.get("image"), "image_runtype": body.get("runtype"),
            "image_args": body.get("args") or [], "onstart": body.get("onstart"),
            "extra_env": [[k, v] for k, v in inst["env"].items()],
            "start_date": inst["start_date"], "uptime_mins": (time.time() - inst["start_date"]) / 60 if running else None,
            "template_hash_id": body.get("template_hash_id"), "reliability2": o["reliability2"],
        }
