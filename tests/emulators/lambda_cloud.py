"""Lambda Cloud emulator: the REST API under /api/v1, docs/providers.md#lambda.

Emulated: GET /api/v1/instance-types, POST /api/v1/instance-operations/launch | terminate | restart,
GET /api/v1/instances, GET /api/v1/instances/{id}, GET/POST /api/v1/ssh-keys,
DELETE /api/v1/ssh-keys/{id}, GET /api/v1/file-systems, GET /api/v1/images.

Behaviour worth knowing (docs/providers.md, "Traps" 14-16):
- Envelope: success {"data": ...}; errors {"error": {code, message, suggestion?}, "field_errors"?}.
- Auth: Bearer KEY or HTTP Basic KEY: (empty password).
- price_cents_per_hour is cents for the WHOLE instance; specs.memory_gib is system RAM.
- launch needs exactly one ssh_key_names entry naming an existing key (the account starts with one
  key, "emulator-key"); `quantity` above the region's free capacity launches fewer instances (partial
  instance_ids); a type/region without capacity answers 400 insufficient-capacity.
- Optional launch rate limit (config launch_interval_s, default 0 = off): a launch sooner than that
  after the previous one answers 429.
- A new instance is "booting" with ip null for boot_polls observations, then "active" with
  ip = ssh_host (SSH user ubuntu, port 22 on the real cloud). Terminate answers with the instances in
  "terminating"; they show "terminating" once more, then are gone (GET /instances/{id} -> 404
  global/object-does-not-exist). There is no stop.
- Emulator-only extension: when ssh_port is not 22 the instance also carries "x_emulator_ssh_port"
  (the real API has no port field; a client must use 22 unless told otherwise in tests).
"""

import hashlib
import time

from core import Provider, Response, new_id

REGIONS = {
    "us-east-1": "Virginia, USA",
    "us-west-1": "California, USA",
    "us-south-1": "Texas, USA",
    "europe-central-1": "Germany",
}

# name -> (gpu count, gpu_description, price cents whole instance, vcpus, memory_gib, storage_gib,
#          {region: free instances})
INSTANCE_TYPES = {
    "gpu_1x_a10": (1, "A10 (24 GB PCIe)", 75, 30, 200, 1400, {"us-east-1": 3, "us-west-1": 2}),
    "gpu_1x_a100": (1, "A100 (40 GB PCIe)", 129, 30, 200, 512, {"us-south-1": 2}),
    "gpu_1x_a100_sxm4": (1, "A100 (40 GB SXM4)", 129, 30, 200, 512, {"us-east-1": 1}),
    "gpu_8x_a100": (8, "A100 (40 GB SXM4)", 1032, 124, 1800, 6144, {}),
    "gpu_8x_a100_80gb_sxm4": (8, "A100 (80 GB SXM4)", 1432, 240, 1800, 20480, {"us-west-1": 1}),
    "gpu_1x_h100_pcie": (1, "H100 (80 GB PCIe)", 249, 26, 200, 1024, {"us-east-1": 2, "europe-central-1": 1}),
    "gpu_1x_h100_sxm5": (1, "H100 (80 GB SXM5)", 329, 26, 225, 2750, {"us-south-1": 4, "us-east-1": 2}),
    "gpu_2x_h100_sxm5": (2, "H100 (80 GB SXM5)", 638, 52, 450, 5500, {"us-south-1": 2}),
    "gpu_4x_h100_sxm5": (4, "H100 (80 GB SXM5)", 1236, 104, 900, 11000, {"us-south-1": 1}),
    "gpu_8x_h100_sxm5": (8, "H100 (80 GB SXM5)", 2392, 208, 1800, 22000, {}),
    "gpu_1x_gh200": (1, "GH200 (96 GB)", 149, 64, 432, 4096, {"us-east-1": 1}),
}

DEFAULT_KEY = {"id": "0920582c7ff041399e34823a0be62549", "name": "emulator-key",
               "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmulatorEmulatorEmulatorEmulatorEmul emulator"}


def _err(status, code, message, suggestion=None, field_errors=None):
    body = {"error": {"code": code, "message": message}}
    if suggestion:
        body["error"]["suggestion"] = suggestion
    if field_errors:
        body["field_errors"] = field_errors
    return Response(status, body)


class Lambda(Provider):
    name = "lambda"
    extra_config_keys = {"launch_interval_s"}

    def reset(self):
        self.capacity = {name: dict(t[6]) for name, t in INSTANCE_TYPES.items()}
        self.insts = {}
        self.gone = []
        self.keys = [dict(DEFAULT_KEY)]
        self.last_launch = None
        self.emu.config.setdefault("launch_interval_s", 0)

    def route(self, req):
        p = req.path.rstrip("/")
        if p == "/api/v1/instance-types":
            req.action = "search"
        elif p == "/api/v1/instance-operations/launch":
            req.action = "create"
        elif p == "/api/v1/instance-operations/terminate":
            req.action = "terminate"
        elif p == "/api/v1/instance-operations/restart":
            req.action = "start"
        elif p == "/api/v1/instances":
            req.action = "list"
        elif p.startswith("/api/v1/instances/"):
            req.action = "get"

    def extract_key(self, req):
        return req.bearer_or_basic_key(allow_basic=True)

    def auth_failure(self, req, given):
        return _err(401, "global/invalid-api-key", "API key was invalid, expired, or deleted.",
                    "Check your API key or create a new one, then try again.")

    def error_body(self, status, message):
        if status == 429:
            return {"error": {"code": "global/quota-exceeded", "message": message or "Too many requests."}}
        if status >= 500:
            return {"error": {"code": "global/unknown", "message": message or "An unknown error occurred."}}
        return {"error": {"code": "global/invalid-parameters", "message": message or "Invalid request."}}

    def apply_vanish(self, offer_id):
        text = str(offer_id)
        for sep in (":", "@", "/"):
            if sep in text:
                name, region = text.split(sep, 1)
                if name in self.capacity:
                    self.capacity[name][region] = 0
                return
        if text in self.capacity:
            self.capacity[text] = {}

    def instances(self):
        # "terminating" instances no longer bill: they count as terminated here.
        return [self._view(i) for i in self.insts.values() if i["status"] != "terminating"]

    def terminated(self):
        return list(self.gone) + [self._view(i) for i in self.insts.values() if i["status"] == "terminating"]

    # --- handling ---------------------------------------------------------------------------
    def handle(self, req, fired):
        kinds = {f["kind"]: f for f in fired}
        p, m = req.path.rstrip("/"), req.method
        body = req.json
        if m == "POST" and req.raw_body and not isinstance(body, dict):
            return _err(400, "global/invalid-parameters", "Request body must be a JSON object.")
        body = body if isinstance(body, dict) else {}
        if p == "/api/v1/instance-types" and m == "GET":
            return Response(200, {"data": self._instance_types()})
        if p == "/api/v1/instance-operations/launch" and m == "POST":
            return self._launch(body, kinds)
        if p == "/api/v1/instance-operations/terminate" and m == "POST":
            return self._terminate(body, kinds)
        if p == "/api/v1/instance-operations/restart" and m == "POST":
            ids = body.get("instance_ids") or []
            done = []
            for iid in ids:
                inst = self.insts.get(iid)
                if inst and inst["status"] in ("booting", "active", "unhealthy"):
                    inst["status"] = "booting"
                    inst["polls"] = 0
                    inst["failed"] = False
                    done.append(self._view(inst))
            return Response(200, {"data": {"restarted_instances": done}})
        if p == "/api/v1/instances" and m == "GET":
            out = []
            for inst in list(self.insts.values()):
                self._observe(inst, kinds)
                if inst["id"] in self.insts:
                    out.append(self._view(inst))
            return Response(200, {"data": out})
        if p.startswith("/api/v1/instances/") and m == "GET":
            inst = self.insts.get(p.rsplit("/", 1)[1])
            if inst is None:
                return _err(404, "global/object-does-not-exist", "Instance not found.")
            self._observe(inst, kinds)
            if inst["id"] not in self.insts:
                return _err(404, "global/object-does-not-exist", "Instance not found.")
            return Response(200, {"data": self._view(inst)})
        if p == "/api/v1/ssh-keys":
            if m == "GET":
                return Response(200, {"data": [dict(k) for k in self.keys]})
            if m == "POST":
                return self._add_key(body)
        if p.startswith("/api/v1/ssh-keys/") and m == "DELETE":
            kid = p.rsplit("/", 1)[1]
            key = next((k for k in self.keys if k["id"] == kid), None)
            if key is None:
                return _err(404, "global/object-does-not-exist", "SSH key not found.")
            if any(key["name"] in i["ssh_key_names"] and i["status"] != "terminated" for i in self.insts.values()):
                return _err(400, "ssh-keys/key-in-use", "SSH key is in use by an instance.")
            self.keys.remove(key)
            return Response(200, {"data": {}})
        if p == "/api/v1/file-systems" and m == "GET":
            return Response(200, {"data": []})
        if p == "/api/v1/images" and m == "GET":
            return Response(200, {"data": [{"id": "img-%s" % r, "name": "Lambda Stack 22.04",
                                            "family": "lambda-stack-22-04", "architecture": "x86_64",
                                            "region": {"name": r, "description": d}}
                                           for r, d in REGIONS.items()]})
        return _err(404, "global/invalid-address", "Endpoint not found: %s %s" % (m, req.path))

    def _instance_types(self):
        out = {}
        for name, (count, gdesc, cents, vcpus, mem, disk, _) in INSTANCE_TYPES.items():
            out[name] = {
                "instance_type": self._type_record(name),
                "regions_with_capacity_available": [{"name": r, "description": REGIONS[r]}
                                                    for r, free in self.capacity[name].items() if free > 0],
            }
        return out

    @staticmethod
    def _type_record(name):
        count, gdesc, cents, vcpus, mem, disk, _ = INSTANCE_TYPES[name]
        return {"name": name, "description": "%dx %s" % (count, gdesc), "gpu_description": gdesc,
                "price_cents_per_hour": cents,
                "specs": {"vcpus": vcpus, "memory_gib": mem, "storage_gib": disk, "gpus": count}}

    def _launch(self, body, kinds):
        interval = float(self.emu.config.get("launch_interval_s") or 0)
        now = time.time()
        if interval > 0 and self.last_launch is not None and now - self.last_launch < interval:
            resp = _err(429, "global/quota-exceeded",
                        "Too many launch requests: at most one launch per %g seconds." % interval,
                        "Wait and try again.")
            resp.headers["Retry-After"] = str(max(1, int(interval - (now - self.last_launch) + 0.999)))
            return resp
        self.last_launch = now
        field_errors = {}
        name = body.get("instance_type_name")
        region = body.get("region_name")
        keys = body.get("ssh_key_names")
        if name not in INSTANCE_TYPES:
            field_errors["instance_type_name"] = {"code": "global/invalid-parameters",
                                                  "message": "Unknown instance type %r." % (name,)}
        if region not in REGIONS:
            field_errors["region_name"] = {"code": "global/invalid-parameters",
                                           "message": "Unknown region %r." % (region,)}
        if not isinstance(keys, list) or len(keys) != 1:
            field_errors["ssh_key_names"] = {"code": "global/invalid-parameters",
                                             "message": "Exactly one SSH key name must be provided."}
        fs = body.get("file_system_names") or []
        if len(fs) > 1:
            field_errors["file_system_names"] = {"code": "global/invalid-parameters",
                                                 "message": "At most one file system may be attached."}
        quantity = body.get("quantity", 1)
        if not isinstance(quantity, int) or quantity < 1:
            field_errors["quantity"] = {"code": "global/invalid-parameters", "message": "quantity must be >= 1."}
        if field_errors:
            return _err(400, "global/invalid-parameters", "Invalid request parameters.", field_errors=field_errors)
        if fs:
            return _err(400, "instance-operations/launch/file-system-in-wrong-region",
                        "File system %r does not exist in region %s." % (fs[0], region))
        if not any(k["name"] == keys[0] for k in self.keys):
            return _err(404, "global/object-does-not-exist", "SSH key %r does not exist." % keys[0])
        free = self.capacity[name].get(region, 0)
        if "capacity" in kinds or free <= 0:
            return _err(400, "instance-operations/launch/insufficient-capacity",
                        "Not enough capacity to fulfill launch request.",
                        "Choose an instance type with more availability, or try again later.")
        made = []
        for _ in range(min(quantity, free)):
            iid = new_id(self.emu.rng, 32, "0123456789abcdef")
            self.insts[iid] = {
                "id": iid, "name": body.get("name"), "type": name, "region": region,
                "ssh_key_names": list(keys), "file_system_names": list(fs), "status": "booting",
                "polls": 0, "failed": "instance_failed" in kinds, "body": body,
                "ignore_terminate": False,
            }
            self.capacity[name][region] -= 1
            made.append(iid)
        return Response(200, {"data": {"instance_ids": made}})

    def _terminate(self, body, kinds):
        ids = body.get("instance_ids")
        if not isinstance(ids, list) or not ids:
            return _err(400, "global/invalid-parameters", "instance_ids must be a non-empty list.")
        done = []
        for iid in ids:
            inst = self.insts.get(iid)
            if inst is None or inst["status"] in ("terminating", "terminated"):
                continue  # partial: unknown or already-terminating ids are left out
            if "terminate_ignored_once" in kinds:
                view = self._view(inst)
                view["status"] = "terminating"
                done.append(view)
                continue
            inst["status"] = "terminating"
            self.capacity[inst["type"]][inst["region"]] = self.capacity[inst["type"]].get(inst["region"], 0) + 1
            done.append(self._view(inst))
        return Response(200, {"data": {"terminated_instances": done}})

    def _observe(self, inst, kinds):
        if "instance_failed" in kinds and inst["status"] in ("booting", "active"):
            inst["failed"] = True
        inst["polls"] += 1
        if inst["status"] == "terminating":
            if inst.get("seen_terminating"):
                inst["status"] = "terminated"
                self.gone.append(self._view(inst))
                del self.insts[inst["id"]]
            inst["seen_terminating"] = True
            return
        if inst["failed"]:
            inst["status"] = "unhealthy"
        elif inst["status"] == "booting" and inst["polls"] > self.emu.config["boot_polls"]:
            inst["status"] = "active"

    def _view(self, inst):
        cfg = self.emu.config
        up = inst["status"] in ("active", "unhealthy")
        ip = cfg["ssh_host"] if up else None
        view = {
            "id": inst["id"], "name": inst["name"], "ip": ip,
            "private_ip": "10.19.%d.%d" % (len(inst["id"]) % 200, int(inst["id"][:2], 16)) if up else None,
            "status": inst["status"], "ssh_key_names": inst["ssh_key_names"],
            "file_system_names": inst["file_system_names"],
            "region": {"name": inst["region"], "description": REGIONS[inst["region"]]},
            "instance_type": self._type_record(inst["type"]),
            "hostname": ip.replace(".", "-") + ".cloud.lambdalabs.com" if ip else None,
            "jupyter_token": hashlib.sha1(inst["id"].encode()).hexdigest()[:32],
            "jupyter_url": "https://jupyter-%s.lambdaspaces.com/?token=x" % inst["id"][:8] if up else None,
            "is_reserved": False,
        }
        if cfg["ssh_port"] != 22:
            view["x_emulator_ssh_port"] = cfg["ssh_port"]
        if cfg.get("ssh_user") and cfg["ssh_user"] != "ubuntu":
            view["x_emulator_ssh_user"] = cfg["ssh_user"]
        return view

    def _add_key(self, body):
        name = body.get("name")
        if not name:
            return _err(400, "global/invalid-parameters", "name is required.",
                        field_errors={"name": {"code": "global/invalid-parameters", "message": "required"}})
        if any(k["name"] == name for k in self.keys):
            return _err(400, "global/invalid-parameters", "An SSH key named %r already exists." % name)
        key = {"id": new_id(self.emu.rng, 32, "0123456789abcdef"), "name": name}
        if body.get("public_key"):
            key["public_key"] = body["public_key"]
        else:
            key["public_key"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGeneratedByEmulator%s" % key["id"][:8]
            key["private_key"] = ("-----BEGIN OPENSSH PRIVATE KEY-----\nemulator-generated-%s\n"
                                  "-----END OPENSSH PRIVATE KEY-----\n" % key["id"])
        self.keys.append({k: v for k, v in key.items() if k != "private_key"})
        return Response(200, {"data": key})
