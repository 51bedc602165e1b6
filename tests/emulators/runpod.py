"""RunPod emulator: the GraphQL API (POST /graphql), docs/providers.md#runpod.

Emulated: gpuTypes (with lowestPrice(input)), dataCenters, countryCodes, myself (pods, pubKey,
balance), pod(input:{podId}); mutations podFindAndDeployOnDemand, podRentInterruptable, podStop,
podResume, podBidResume, podTerminate, updateUserSettings. Requests are parsed as real GraphQL
(inline literals and $variables both work; see graphql.py).

Behaviour worth knowing (the traps a client must survive, docs/providers.md, "Traps"):
- Errors come back with HTTP 200 and {"errors":[{message, path, extensions:{code}}], "data": null}.
- A new pod reports desiredStatus RUNNING with `runtime: null` for `boot_polls` observations
  (pod or myself.pods queries), then runtime.ports; port 22 is public (ip = ssh_host, publicPort =
  ssh_port) only when the create asked for supportPublicIp: true; otherwise it is private.
- podStop -> EXITED (runtime null); podTerminate -> the pod drops out of myself.pods and pod() is null;
  terminating it again -> "pod not found to terminate".
- terminateAfter / stopAfter (ISO datetimes) are enforced when the pod is next observed.
- Regions: dataCenters.gpuAvailability says which data centre stocks which type (DC_STOCK, uneven);
  lowestPrice(input: {dataCenterId}) and a create with dataCenterId honour it (not stocked there ->
  no offer / SUPPLY_CONSTRAINT; an unknown id -> BAD_USER_INPUT). Community hosts are in RO
  (lowestPrice.countryCode). Pod.machine.location is the country the pod landed in.
- Prices: securePrice/communityPrice and lowestPrice.uninterruptablePrice/minimumBidPrice are all
  $ per GPU-hour here (the emulator's pick for the unsettled lowestPrice unit, docs/providers.md,
  RunPod "Offers"); Pod.costPerHr is the
  whole pod.
"""

import time

from core import GPU_COUNTS, GPU_MODELS, Provider, Response, iso_now, new_id, parse_iso
from graphql import (Document, GraphQLFieldError, GraphQLSyntaxError, GraphQLValidationError)

NO_CAPACITY = ("There are no longer any instances available with the requested specifications. "
               "Please refresh and try again.")

# key -> (gpuTypeId, displayName, manufacturer, secure?, community?, max count, stock)
RUNPOD_GPUS = {
    "H100_80GB": ("NVIDIA H100 80GB HBM3", "H100 SXM", "Nvidia", True, True, 8, "High"),
    "H200_141GB": ("NVIDIA H200", "H200 SXM", "Nvidia", True, False, 8, "Medium"),
    "A100_80GB": ("NVIDIA A100-SXM4-80GB", "A100 SXM", "Nvidia", True, True, 8, "High"),
    "A100_40GB": ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB", "Nvidia", False, True, 4, "Low"),
    "RTX4090_24GB": ("NVIDIA GeForce RTX 4090", "RTX 4090", "Nvidia", True, True, 8, "High"),
    "L40S_48GB": ("NVIDIA L40S", "L40S", "Nvidia", True, True, 8, "Medium"),
    "MI300X_192GB": ("AMD Instinct MI300X OAM", "MI300X", "AMD", True, False, 8, "Low"),
}

DATA_CENTERS = [
    ("US-TX-3", "Texas 3", "United States", "US"),
    ("EU-RO-1", "Romania 1", "Romania", "RO"),
    ("US-KS-2", "Kansas 2", "United States", "US"),
]

# Which GPU models each data centre stocks (dataCenters.gpuAvailability; a create or lowestPrice
# naming a data centre that does not stock the type finds no capacity there). Deliberately uneven,
# so a client's region filter has something to tell apart.
DC_STOCK = {
    "US-TX-3": set(RUNPOD_GPUS),
    "EU-RO-1": set(RUNPOD_GPUS) - {"H200_141GB", "MI300X_192GB"},
    "US-KS-2": {"H100_80GB", "A100_80GB", "RTX4090_24GB", "L40S_48GB"},
}
# The country community-cloud hosts are in (lowestPrice.countryCode when none is asked for).
COMMUNITY_COUNTRY = "RO"

CREATE_MUTATIONS = {"podFindAndDeployOnDemand", "podRentInterruptable"}
PUBLIC_QUERIES = {"gpuTypes", "dataCenters", "countryCodes", "__typename"}


class RunPod(Provider):
    name = "runpod"
    extra_fault_kinds = {"graphql_error", "runtime_null"}

    def reset(self):
        self.pods = {}          # id -> internal record (terminated ones kept for /_emulator/state)
        self.vanished = set()   # gpuTypeIds
        self.pub_key = ""
        self.gpus = {}
        for key, vendor, vram, price, ram, vcpu in GPU_MODELS:
            if key not in RUNPOD_GPUS:
                continue
            gid, display, manu, secure, community, max_count, stock = RUNPOD_GPUS[key]
            self.gpus[gid] = {
                "id": gid, "displayName": display, "manufacturer": manu, "memoryInGb": vram,
                "secureCloud": secure, "communityCloud": community,
                "securePrice": round(price * 1.15, 2) if secure else None,
                "communityPrice": round(price, 2) if community else None,
                "secureSpotPrice": round(price * 0.7, 2) if secure else None,
                "communitySpotPrice": round(price * 0.6, 2) if community else None,
                "maxGpuCount": max_count,
                "maxGpuCountSecureCloud": max_count if secure else 0,
                "maxGpuCountCommunityCloud": max_count if community else 0,
                "minPodGpuCount": 1, "stock": stock, "ram_per_gpu": ram, "vcpu_per_gpu": vcpu,
                "key": key,
            }

    # --- routing and auth -------------------------------------------------------------------
    def route(self, req):
        req.doc = None
        req.doc_error = None
        if req.path != "/graphql" or req.method != "POST":
            return
        body = req.json if isinstance(req.json, dict) else {}
        try:
            req.doc = Document(body.get("query") or "", body.get("operationName"), body.get("variables"))
        except (GraphQLSyntaxError, GraphQLValidationError) as e:
            req.doc_error = str(e)
            return
        roots = [name for _, name, _, _ in req.doc.root_fields()]
        req.operations = ([req.doc.operation_name] if req.doc.operation_name else []) + roots
        if any(r in CREATE_MUTATIONS for r in roots):
            req.action = "create"
        elif "podTerminate" in roots:
            req.action = "terminate"
        elif "podStop" in roots:
            req.action = "stop"
        elif "podResume" in roots or "podBidResume" in roots:
            req.action = "start"
        elif "gpuTypes" in roots:
            req.action = "search"
        elif "pod" in roots:
            req.action = "get"
        elif "myself" in roots:
            req.action = "list"

    def extract_key(self, req):
        key = req.bearer_or_basic_key()
        return key if key else req.q("api_key")

    def needs_auth(self, req):
        # gpuTypes is public pricing: gpuhunt queries it unauthenticated (docs/providers.md, RunPod "Offers").
        if req.doc is None:
            return True
        roots = {name for _, name, _, _ in req.doc.root_fields()}
        return not roots <= PUBLIC_QUERIES

    def auth_failure(self, req, given):
        return Response(401, {"errors": [{"message": "Unauthorized: invalid or missing API key",
                                          "extensions": {"code": "UNAUTHENTICATED"}}]})

    def error_body(self, status, message):
        return {"errors": [{"message": message or "Request failed with status %d" % status,
                            "extensions": {"code": "INTERNAL_SERVER_ERROR" if status >= 500 else "BAD_REQUEST"}}],
                "data": None}

    def on_fault_added(self, fault):
        if fault["kind"] == "runtime_null" and not isinstance(fault.get("polls"), int):
            raise ValueError("runtime_null fault needs an integer polls")

    def apply_vanish(self, offer_id):
        self.vanished.add(str(offer_id))

    def instances(self):
        return [self._pod_view(p) for p in self._live()]

    def terminated(self):
        return [self._pod_view(p) for p in self.pods.values() if p["desired"] == "TERMINATED"]

    # --- request handling -------------------------------------------------------------------
    def handle(self, req, fired):
        if req.path != "/graphql":
            return Response(404, {"errors": [{"message": "Not found: " + req.path}]})
        if req.method != "POST":
            return Response(405, {"errors": [{"message": "GraphQL requests must be POST"}]})
        if req.json is None:
            return Response(400, {"errors": [{"message": "POST body must be JSON",
                                              "extensions": {"code": "BAD_REQUEST"}}]})
        if req.doc_error:
            code = "GRAPHQL_PARSE_FAILED" if "Syntax Error" in req.doc_error else "GRAPHQL_VALIDATION_FAILED"
            return Response(400, {"errors": [{"message": req.doc_error, "extensions": {"code": code}}]})
        for f in fired:
            if f["kind"] == "graphql_error":
                return self._errors(f.get("message", "Something went wrong."), f.get("code"))
        kinds = {f["kind"]: f for f in fired}
        self._enforce_ttls()
        # Faults that act on existing pods when they fire on a non-create request (they show in
        # this very answer).
        if "runtime_null" in kinds and req.action != "create":
            for p in self._live():
                p["null_until"] = p["polls"] + kinds["runtime_null"]["polls"]
        if "instance_failed" in kinds and req.action != "create":
            for p in self._live():
                p["desired"] = "DEAD"
        doc = req.doc
        data = {}
        observed = set()
        try:
            for alias, name, args, field in doc.root_fields():
                if name == "__typename":
                    data[alias] = "Mutation" if doc.operation_type == "mutation" else "Query"
                    continue
                value = self._resolve_root(doc, name, args, kinds, observed)
                data[alias] = doc.project(value, field, name)
        except GraphQLFieldError as e:
            return self._errors(e.message, e.code, path=[alias])
        except GraphQLValidationError as e:
            return Response(400, {"errors": [{"message": str(e),
                                              "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]})
        return Response(200, {"data": data})

    def _errors(self, message, code=None, path=None):
        err = {"message": message, "locations": [{"line": 1, "column": 1}]}
        if path:
            err["path"] = path
        err["extensions"] = {"code": code or "INTERNAL_SERVER_ERROR"}
        return Response(200, {"errors": [err], "data": None})

    def _resolve_root(self, doc, name, args, kinds, observed):
        if doc.operation_type == "query":
            if name == "gpuTypes":
                return self._gpu_types(args.get("input") or {})
            if name == "dataCenters":
                return self._data_centers()
            if name == "countryCodes":
                return sorted({dc[3] for dc in DATA_CENTERS})
            if name == "myself":
                return self._myself(observed)
            if name == "pod":
                pod_id = (args.get("input") or {}).get("podId")
                p = self.pods.get(pod_id)
                if p is None or p["desired"] == "TERMINATED":
                    return None
                self._observe(p, observed)
                return self._pod_view(p)
            raise GraphQLValidationError('Cannot query field "%s" on type "Query".' % name)
        if doc.operation_type == "mutation":
            inp = args.get("input") or {}
            if name in CREATE_MUTATIONS:
                return self._create(name, inp, kinds)
            if name == "podTerminate":
                return self._terminate(inp.get("podId"), kinds)
            if name == "podStop":
                p = self._require_pod(inp.get("podId"))
                p["desired"] = "EXITED"
                return {"id": p["id"], "desiredStatus": "EXITED", **self._pod_view(p)}
            if name in ("podResume", "podBidResume"):
                p = self._require_pod(inp.get("podId"))
                if p["desired"] == "DEAD":
                    raise GraphQLFieldError("Pod is dead and cannot be resumed", "BAD_REQUEST")
                p["desired"] = "RUNNING"
                p["polls"] = 0
                p["null_until"] = 0
                p["started_at"] = time.time()
                return self._pod_view(p)
            if name == "updateUserSettings":
                if "pubKey" in inp:
                    self.pub_key = inp["pubKey"] or ""
                return {"id": "user_emulator", "pubKey": self.pub_key}
            raise GraphQLValidationError('Cannot query field "%s" on type "Mutation".' % name)
        raise GraphQLValidationError("subscriptions are not supported")

    # --- offers -----------------------------------------------------------------------------
    def _gpu_types(self, flt):
        out = []
        for g in self.gpus.values():
            if flt.get("id") and flt["id"] != g["id"]:
                continue
            out.append(self._gpu_view(g))
        return out

    def _gpu_view(self, g):
        view = {k: v for k, v in g.items() if k not in ("stock", "ram_per_gpu", "vcpu_per_gpu", "key")}
        base = g["securePrice"] or g["communityPrice"]
        view.update({
            "__typename": "GpuType",
            "oneWeekPrice": round(base * 0.95, 2), "oneMonthPrice": round(base * 0.9, 2),
            "threeMonthPrice": round(base * 0.85, 2), "sixMonthPrice": round(base * 0.8, 2),
            "clusterPrice": None, "cudaCores": 0,
            "nodeGroupDatacenters": [{"id": dc[0]} for dc in DATA_CENTERS],
            "lowestPrice": lambda args, g=g: self._lowest_price(g, args.get("input") or {}),
        })
        return view

    def _lowest_price(self, g, inp):
        count = inp.get("gpuCount") or 1
        secure = inp.get("secureCloud")
        offered = []
        if secure in (True, None) and g["secureCloud"]:
            offered.append((g["securePrice"], g["secureSpotPrice"]))
        if secure in (False, None) and g["communityCloud"]:
            offered.append((g["communityPrice"], g["communitySpotPrice"]))
        counts = [c for c in GPU_COUNTS if c <= g["maxGpuCount"]]
        fits = ((inp.get("minMemoryInGb") or 0) <= g["ram_per_gpu"] * count
                and (inp.get("minVcpuCount") or 0) <= g["vcpu_per_gpu"] * count)
        dc = inp.get("dataCenterId")
        in_dc = dc is None or g["key"] in DC_STOCK.get(dc, set())
        available = (bool(offered) and g["id"] not in self.vanished and count <= g["maxGpuCount"] and fits
                     and in_dc)
        on_demand = min(o[0] for o in offered) if offered else None
        spot = min(o[1] for o in offered) if offered else None
        return {
            "__typename": "LowestPrice",
            "minimumBidPrice": spot if available else None,
            "uninterruptablePrice": on_demand if available else None,
            "minVcpu": g["vcpu_per_gpu"] * count, "minMemory": g["ram_per_gpu"] * count,
            "stockStatus": g["stock"] if available else None,
            "compliance": [], "maxUnreservedGpuCount": g["maxGpuCount"] if available else 0,
            "availableGpuCounts": counts if available else [],
            "countryCode": inp.get("countryCode") or (COMMUNITY_COUNTRY if secure is False else "US"),
        }

    def _data_centers(self):
        out = []
        for dc_id, name, location, _cc in DATA_CENTERS:
            out.append({"__typename": "DataCenter", "id": dc_id, "name": name, "location": location,
                        "listed": True,
                        "gpuAvailability": [{"gpuTypeId": g["id"], "displayName": g["displayName"],
                                             "stockStatus": (None if g["id"] in self.vanished
                                                             or g["key"] not in DC_STOCK[dc_id] else g["stock"])}
                                            for g in self.gpus.values()]})
        return out

    # --- pods -------------------------------------------------------------------------------
    def _live(self):
        return [p for p in self.pods.values() if p["desired"] != "TERMINATED"]

    def _require_pod(self, pod_id):
        p = self.pods.get(pod_id)
        if p is None or p["desired"] == "TERMINATED":
            raise GraphQLFieldError("pod not found", "NOT_FOUND")
        return p

    def _observe(self, p, observed):
        if p["id"] not in observed:
            observed.add(p["id"])
            p["polls"] += 1

    def _myself(self, observed):
        live = self._live()
        return {
            "__typename": "User", "id": "user_emulator", "email": "emulator@example.invalid",
            "pubKey": self.pub_key, "clientBalance": 100.0,
            "currentSpendPerHr": round(sum(p["cost"] for p in live if p["desired"] == "RUNNING"), 3),
            "spendLimit": 1000, "clientLifetimeSpend": 0.0, "creditAlertThreshold": 10,
            "referralEarnings": 0.0, "networkVolumes": [],
            "pods": lambda args: [self._observed_view(p, observed) for p in self._live()],
        }

    def _observed_view(self, p, observed):
        self._observe(p, observed)
        return self._pod_view(p)

    def _enforce_ttls(self):
        now = time.time()
        for p in self._live():
            if p["terminate_after"] is not None and now >= p["terminate_after"]:
                p["desired"] = "TERMINATED"
            elif p["stop_after"] is not None and now >= p["stop_after"] and p["desired"] == "RUNNING":
                p["desired"] = "EXITED"

    def _create(self, mutation, inp, kinds):
        if "capacity" in kinds:
            raise GraphQLFieldError(NO_CAPACITY, "SUPPLY_CONSTRAINT")
        gid = inp.get("gpuTypeId")
        g = self.gpus.get(gid)
        if g is None:
            raise GraphQLFieldError('Invalid gpuTypeId "%s"' % gid, "BAD_USER_INPUT")
        count = inp.get("gpuCount") or 1
        cloud = inp.get("cloudType") or "ALL"
        if cloud not in ("ALL", "SECURE", "COMMUNITY"):
            raise GraphQLFieldError('Enum "CloudTypeEnum" cannot represent value: "%s"' % cloud, "BAD_USER_INPUT")
        if (inp.get("volumeInGb") or 0) > 0 and not inp.get("volumeMountPath"):
            raise GraphQLFieldError("invalid mount config: volume mount target must not be empty", "BAD_USER_INPUT")
        secure = cloud == "SECURE" or (cloud == "ALL" and g["secureCloud"])
        if (cloud == "SECURE" and not g["secureCloud"]) or (cloud == "COMMUNITY" and not g["communityCloud"]):
            raise GraphQLFieldError(NO_CAPACITY, "SUPPLY_CONSTRAINT")
        dc = inp.get("dataCenterId")
        if dc is not None and dc not in DC_STOCK:
            raise GraphQLFieldError('Invalid dataCenterId "%s"' % dc, "BAD_USER_INPUT")
        if dc is not None and g["key"] not in DC_STOCK[dc]:
            raise GraphQLFieldError(NO_CAPACITY, "SUPPLY_CONSTRAINT")
        if (gid in self.vanished or count > g["maxGpuCount"]
                or (inp.get("minMemoryInGb") or 0) > g["ram_per_gpu"] * count
                or (inp.get("minVcpuCount") or 0) > g["vcpu_per_gpu"] * count):
            raise GraphQLFieldError(NO_CAPACITY, "SUPPLY_CONSTRAINT")
        per_gpu = g["securePrice"] if secure else g["communityPrice"]
        spot = mutation == "podRentInterruptable"
        if spot:
            bid = inp.get("bidPerGpu")
            if bid is None:
                raise GraphQLFieldError("bidPerGpu is required", "BAD_USER_INPUT")
            floor = g["secureSpotPrice"] if secure else g["communitySpotPrice"]
            if bid < floor:
                raise GraphQLFieldError("Your bid price is below the minimum bid price of %.2f" % floor,
                                        "BAD_USER_INPUT")
            per_gpu = bid
        for key in ("terminateAfter", "stopAfter"):
            if inp.get(key):
                try:
                    parse_iso(inp[key])
                except ValueError:
                    raise GraphQLFieldError('Invalid DateTime for %s: "%s"' % (key, inp[key]), "BAD_USER_INPUT")
        pod_id = new_id(self.emu.rng)
        env = inp.get("env") or []
        p = {
            "id": pod_id, "input": inp, "mutation": mutation, "gpu": g, "count": count,
            "secure": secure, "spot": spot, "cost": round(per_gpu * count, 3),
            "desired": "DEAD" if "instance_failed" in kinds else "RUNNING",
            # runtime appears after boot_polls (+ a runtime_null fault's polls) observations, and not
            # before observation null_until (runtime_null fired on a read).
            "polls": 0, "null_until": 0,
            "extra_boot": kinds["runtime_null"]["polls"] if "runtime_null" in kinds else 0,
            "created_at": time.time(), "started_at": time.time(),
            "terminate_after": parse_iso(inp["terminateAfter"]) if inp.get("terminateAfter") else None,
            "stop_after": parse_iso(inp["stopAfter"]) if inp.get("stopAfter") else None,
            "env": ["%s=%s" % (e.get("key"), e.get("value")) for e in env if isinstance(e, dict)],
            "host_id": "%s-%s" % (pod_id, new_id(self.emu.rng, 8, "0123456789abcdef")),
            "ignore_terminates": 0,
            "location": (next(c for d, _, _, c in DATA_CENTERS if d == dc) if dc is not None
                         else inp.get("countryCode") or ("US" if secure else COMMUNITY_COUNTRY)),
        }
        self.emu.assign_ssh_backend(p)
        for e in env:
            if isinstance(e, dict) and e.get("key") == "PUBLIC_KEY":
                self.emu.install_public_key(p, e.get("value"))  # what the image's /start.sh does
        self.pods[pod_id] = p
        return self._pod_view(p)

    def _terminate(self, pod_id, kinds):
        p = self.pods.get(pod_id)
        if p is None or p["desired"] == "TERMINATED":
            raise GraphQLFieldError("pod not found to terminate", "NOT_FOUND")
        if "terminate_ignored_once" in kinds:
            return None
        p["desired"] = "TERMINATED"
        p["terminated_at"] = time.time()
        return None

    def _pod_view(self, p):
        inp, g, cfg = p["input"], p["gpu"], self.emu.config
        runtime = None
        booted = p["polls"] > cfg["boot_polls"] + p["extra_boot"] and p["polls"] > p["null_until"]
        if p["desired"] == "RUNNING" and booted:
            runtime = {
                "__typename": "PodRuntime",
                "uptimeInSeconds": int(time.time() - p["started_at"]),
                "ports": self._runtime_ports(p),
                "gpus": [{"id": "GPU-%s-%d" % (p["id"], i), "gpuUtilPercent": 0, "memoryUtilPercent": 0}
                         for i in range(p["count"])],
                "container": {"cpuPercent": 0, "memoryPercent": 1},
            }
        return {
            "__typename": "Pod",
            "id": p["id"], "name": inp.get("name") or "", "imageName": inp.get("imageName") or "",
            "dockerArgs": inp.get("dockerArgs") or "", "env": list(p["env"]),
            "ports": inp.get("ports") or "", "desiredStatus": p["desired"],
            "lastStatusChange": "Rented by User: %s" % iso_now(),
            "uptimeSeconds": int(time.time() - p["started_at"]) if runtime else 0,
            "podType": "INTERRUPTABLE" if p["spot"] else "RESERVED",
            "costPerHr": p["cost"], "adjustedCostPerHr": p["cost"], "gpuCount": p["count"],
            "vcpuCount": g["vcpu_per_gpu"] * p["count"], "memoryInGb": g["ram_per_gpu"] * p["count"],
            "containerDiskInGb": inp.get("containerDiskInGb") or 0, "volumeInGb": inp.get("volumeInGb") or 0,
            "volumeMountPath": inp.get("volumeMountPath") or "", "machineId": p["host_id"].split("-")[1],
            "templateId": inp.get("templateId"), "locked": False,
            "machine": {"__typename": "Machine", "podHostId": p["host_id"], "gpuDisplayName": g["displayName"],
                        "location": p["location"], "secureCloud": p["secure"],
                        "gpuType": {"displayName": g["displayName"], "manufacturer": g["manufacturer"],
                                    "memoryInGb": g["memoryInGb"], "id": g["id"]}},
            "runtime": runtime,
            "latestTelemetry": None,
        }

    def _runtime_ports(self, p):
        cfg = self.emu.config
        public = bool(p["input"].get("supportPublicIp"))
        ports = []
        extra = 40000
        for spec in (p["input"].get("ports") or "").split(","):
            spec = spec.strip()
            if not spec or "/" not in spec:
                continue
            num, proto = spec.split("/", 1)
            try:
                private = int(num)
            except ValueError:
                continue
            if proto == "http":
                ports.append({"ip": "100.65.0.2", "isIpPublic": False, "privatePort": private,
                              "publicPort": 60000 + private % 1000, "type": "http"})
            elif public:
                extra += 1
                ports.append({"ip": cfg["ssh_host"], "isIpPublic": True, "privatePort": private,
                              "publicPort": self.emu.ssh_port_of(p) if private == 22 else extra, "type": "tcp"})
            else:
                ports.append({"ip": "100.65.0.2", "isIpPublic": False, "privatePort": private,
                              "publicPort": private, "type": "tcp"})
        return ports
