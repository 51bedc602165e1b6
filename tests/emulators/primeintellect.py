"""Prime Intellect emulator: the REST API under /api/v1, docs/providers.md#prime-intellect.

Emulated: GET /api/v1/availability/gpus (paginated {"totalCount","items"}; filters gpu_type,
gpu_count, regions, security), the older GET /api/v1/availability/ ({gpuType: [offer]}),
POST /api/v1/pods/ (create), GET /api/v1/pods/{id}, GET /api/v1/pods (list: total_count/offset/
limit/data), GET /api/v1/pods/status?pod_ids=..., GET /api/v1/pods/history, DELETE /api/v1/pods/{id}.

Behaviour worth knowing (docs/providers.md, "Traps" 17-18):
- Prime is an aggregator: each offer names its underlying `provider`; create must send
  provider.type equal to it, gpuType and (if sent) socket equal to the offer's, and `image` must be
  one of the offer's images[] names (or "custom_template" with customTemplateId) — never a Docker
  reference. Data-center ids contain '-' and cloud ids contain spaces and dots on purpose.
- prices.onDemand / prices.communityPrice are $/hr for the WHOLE configuration (gpuCount GPUs) —
  the emulator's pick for the point the sources leave open (docs/providers.md); Pod.priceHr is the same number.
- A new pod is PROVISIONING (no ssh) for boot_polls-1 observations, then ACTIVE with
  installationStatus INSTALLING (still no ssh), then ACTIVE + FINISHED + sshConnection
  "user@host -p port". config ssh_connection_format "list" renders sshConnection/ip as lists
  ([null] while not ready), "string" (default) as strings (null while not ready).
- Errors: 401 {"detail":"Authorization failed"}; 422 FastAPI validation detail list for missing
  fields; 400/404 {"detail": "..."} otherwise.
"""

import time

from core import GPU_COUNTS, GPU_MODELS, Provider, Response, iso_now, new_id

# key -> [(provider, cloudId, socket, dataCenter, country, security, stock)]
PRIME_OFFERS = {
    "H100_80GB": [("runpod", "NVIDIA H100 80GB HBM3", "SXM5", "US-TX-3", "US", "secure_cloud", "High"),
                  ("datacrunch", "1H100.80S.30V", "SXM5", "FIN-01", "FI", "secure_cloud", "Medium")],
    "H200_141GB": [("datacrunch", "1H200.141S.44V", "SXM5", "FIN-02", "FI", "secure_cloud", "Low")],
    "A100_80GB": [("runpod", "NVIDIA A100-SXM4-80GB", "SXM4", "EU-RO-1", "RO", "community_cloud", "High"),
                  ("massedcompute", "A100.80GB.SXM4", "SXM4", "US-KS-1", "US", "secure_cloud", "Medium")],
    "A100_40GB": [("lambdalabs", "gpu_1x_a100", "PCIe", "us-south-1", "US", "secure_cloud", "Low")],
    "RTX4090_24GB": [("runpod", "NVIDIA GeForce RTX 4090", "PCIe", "EU-RO-1", "RO", "community_cloud", "High")],
    "L40S_48GB": [("hyperstack", "n3-L40Sx1", "PCIe", "CANADA-1", "CA", "secure_cloud", "Medium")],
}

IMAGES = ["ubuntu_22_cuda_12", "cuda_12_4_pytorch_2_5", "vllm_llm_inference"]


def _spec(min_c, default_c, max_c, price, step=1):
    return {"minCount": min_c, "defaultCount": default_c, "maxCount": max_c, "pricePerUnit": price,
            "step": step, "defaultIncludedInPrice": True, "additionalInfo": None}


def _cloud_id(base, count):
    """Underlying providers name multi-GPU configurations differently; some keep one id."""
    if base[0] == "1":
        return str(count) + base[1:]
    if "_1x_" in base:
        return base.replace("_1x_", "_%dx_" % count)
    if base.endswith("x1"):
        return base[:-1] + str(count)
    return base


class PrimeIntellect(Provider):
    name = "primeintellect"
    # deleting_polls: after a DELETE the pod shows status DELETING for that many observations
    # before it is gone (0, the default: gone at once).
    extra_config_keys = {"ssh_connection_format", "deleting_polls"}

    def reset(self):
        self.emu.config.setdefault("ssh_connection_format", "string")
        self.offers = []
        self.vanished = set()
        self.pods = {}
        self.history = []
        for key, vendor, vram, price, ram, vcpu in GPU_MODELS:
            for provider, cloud_id, socket, dc, country, security, stock in PRIME_OFFERS.get(key, []):
                for count in GPU_COUNTS:
                    total = round(price * count * (1.05 if security == "secure_cloud" else 0.9), 2)
                    self.offers.append({
                        "cloudId": _cloud_id(cloud_id, count),
                        "gpuType": key, "socket": socket, "provider": provider, "dataCenter": dc,
                        "country": country, "gpuCount": count, "gpuMemory": vram,
                        "disk": _spec(50, 100 * count, 2000 * count, 0.0001),
                        "vcpu": _spec(vcpu * count // 2, vcpu * count, vcpu * count, None),
                        "memory": _spec(ram * count // 2, ram * count, ram * count, None),
                        "internetSpeed": 1000, "interconnect": 900 if socket.startswith("SXM") and count > 1 else None,
                        "interconnectType": "NVLink" if socket.startswith("SXM") and count > 1 else None,
                        "provisioningTime": 5 if provider == "runpod" else 12,
                        "stockStatus": stock, "security": security,
                        "prices": {"onDemand": total if security == "secure_cloud" else None,
                                   "communityPrice": total if security == "community_cloud" else None,
                                   "isVariable": False, "currency": "USD"},
                        "images": list(IMAGES), "isSpot": False, "prepaidTime": None,
                    })

    # --- routing and auth -------------------------------------------------------------------
    def route(self, req):
        p, m = req.path.rstrip("/"), req.method
        if p.startswith("/api/v1/availability"):
            req.action = "search"
        elif p == "/api/v1/pods" and m == "POST":
            req.action = "create"
        elif p == "/api/v1/pods" and m == "GET":
            req.action = "list"
        elif p in ("/api/v1/pods/status", "/api/v1/pods/history"):
            req.action = "list" if p.endswith("history") else "get"
        elif p.startswith("/api/v1/pods/"):
            req.action = {"GET": "get", "DELETE": "terminate"}.get(m, "other")

    def auth_failure(self, req, given):
        return Response(401, {"detail": "Authorization failed"})

    def error_body(self, status, message):
        return {"detail": message or ("Too many requests" if status == 429 else "Request failed with status %d" % status)}

    def apply_vanish(self, offer_id):
        self.vanished.add(str(offer_id))

    def instances(self):
        return [self._view(p) for p in self.pods.values()]

    def terminated(self):
        return list(self.history)

    # --- handling ---------------------------------------------------------------------------
    def handle(self, req, fired):
        kinds = {f["kind"]: f for f in fired}
        p, m = req.path.rstrip("/"), req.method
        if p == "/api/v1/availability/gpus" and m == "GET":
            items = self._filter(req)
            page = int(req.q("page", "1"))
            size = int(req.q("page_size", "100"))
            return Response(200, {"totalCount": len(items), "items": items[(page - 1) * size: page * size]})
        if p == "/api/v1/availability" and m == "GET":
            grouped = {}
            for o in self._filter(req):
                grouped.setdefault(o["gpuType"], []).append(o)
            return Response(200, grouped)
        if p == "/api/v1/pods" and m == "POST":
            return self._create(req, kinds)
        if p == "/api/v1/pods" and m == "GET":
            offset = int(req.q("offset", "0"))
            limit = int(req.q("limit", "100"))
            pods = list(self.pods.values())
            for pod in pods:
                self._observe(pod, kinds)
            return Response(200, {"total_count": len(pods), "offset": offset, "limit": limit,
                                  "data": [self._view(x) for x in pods[offset:offset + limit]]})
        if p == "/api/v1/pods/status" and m == "GET":
            ids = []
            for v in req.query.get("pod_ids", []):
                ids.extend(x for x in v.split(",") if x)
            out = []
            for pid in ids:
                pod = self.pods.get(pid)
                if pod is None:
                    continue
                self._observe(pod, kinds)
                v = self._view(pod)
                out.append({"podId": pid, "providerType": v["providerType"], "status": v["status"],
                            "sshConnection": v["sshConnection"], "priceHr": v["priceHr"],
                            "primePortMapping": v["primePortMapping"], "ip": v["ip"],
                            "installationStatus": v["installationStatus"],
                            "installationFailure": v["installationFailure"],
                            "installationProgress": v["installationProgress"]})
            return Response(200, {"data": out})
        if p == "/api/v1/pods/history" and m == "GET":
            offset = int(req.q("offset", "0"))
            limit = int(req.q("limit", "100"))
            return Response(200, {"total_count": len(self.history), "offset": offset, "limit": limit,
                                  "data": self.history[offset:offset + limit]})
        if p.startswith("/api/v1/pods/"):
            pid = p.rsplit("/", 1)[1]
            pod = self.pods.get(pid)
            if pod is None:
                return Response(404, {"detail": "Pod not found"})
            if m == "GET":
                self._observe(pod, kinds)
                if pod.get("deleting") is not None:
                    if pod["deleting"] <= 0:
                        self._end(pid, pod)
                        return Response(404, {"detail": "Pod not found"})
                    pod["deleting"] -= 1
                return Response(200, self._view(pod))
            if m == "DELETE":
                if "terminate_ignored_once" not in kinds:
                    polls = int(self.emu.config.get("deleting_polls") or 0)
                    if pod.get("deleting") is not None:
                        pass  # already being deleted: a second DELETE changes nothing
                    elif polls > 0:
                        pod["deleting"] = polls
                    else:
                        self._end(pid, pod)
                return Response(200, {"status": "ok", "id": pid})
        return Response(404, {"detail": "Not Found"})

    def _end(self, pid, pod):
        del self.pods[pid]
        done = self._view(pod)
        done.update({"status": "TERMINATED", "terminatedAt": iso_now(), "sshConnection": None,
                     "ip": None, "totalBilledPrice": round(pod["price"] * (time.time() - pod["t0"]) / 3600, 4)})
        self.history.append(done)

    def _filter(self, req):
        gpu_type = req.q("gpu_type")
        gpu_count = req.q("gpu_count")
        security = req.q("security")
        regions = set()
        for v in req.query.get("regions", []):
            regions.update(x for x in v.split(",") if x)
        out = []
        for o in self.offers:
            if o["cloudId"] in self.vanished:
                continue
            if gpu_type and o["gpuType"] != gpu_type:
                continue
            if gpu_count and o["gpuCount"] != int(gpu_count):
                continue
            if security and o["security"] != security:
                continue
            if regions and o["country"] not in regions and o["dataCenter"] not in regions:
                continue
            out.append(o)
        return out

    def _create(self, req, kinds):
        body = req.json
        if not isinstance(body, dict) or not isinstance(body.get("pod"), dict):
            return Response(422, {"detail": [{"loc": ["body", "pod"], "msg": "field required",
                                              "type": "value_error.missing"}]})
        pod_in = body["pod"]
        missing = [f for f in ("cloudId", "gpuType", "gpuCount", "image") if pod_in.get(f) in (None, "")]
        if not isinstance(body.get("provider"), dict) or not body["provider"].get("type"):
            missing.append("provider.type")
        if missing:
            return Response(422, {"detail": [{"loc": ["body"] + f.split(".") if f.startswith("provider")
                                              else ["body", "pod", f], "msg": "field required",
                                              "type": "value_error.missing"} for f in missing]})
        matches = [o for o in self.offers if o["cloudId"] == pod_in["cloudId"]
                   and o["gpuCount"] == pod_in["gpuCount"]
                   and (not pod_in.get("dataCenterId") or o["dataCenter"] == pod_in["dataCenterId"])]
        if not matches:
            return Response(404, {"detail": "No offer with cloudId %r, gpuCount %s%s" % (
                pod_in["cloudId"], pod_in["gpuCount"],
                " in data center %r" % pod_in["dataCenterId"] if pod_in.get("dataCenterId") else "")})
        offer = matches[0]
        if pod_in["gpuType"] != offer["gpuType"]:
            return Response(400, {"detail": "gpuType %r does not match the offer's %r" % (pod_in["gpuType"], offer["gpuType"])})
        if pod_in.get("socket") and pod_in["socket"] != offer["socket"]:
            return Response(400, {"detail": "socket %r does not match the offer's %r" % (pod_in["socket"], offer["socket"])})
        if body["provider"]["type"] != offer["provider"]:
            return Response(400, {"detail": "Provider type %r does not match the offer's provider %r"
                                            % (body["provider"]["type"], offer["provider"])})
        image = pod_in["image"]
        if image == "custom_template":
            if not pod_in.get("customTemplateId"):
                return Response(400, {"detail": "customTemplateId is required when image is custom_template"})
        elif image not in offer["images"]:
            return Response(400, {"detail": "Image %r is not available for this offer; choose one of %s"
                                            % (image, ", ".join(offer["images"]))})
        if "capacity" in kinds or offer["cloudId"] in self.vanished:
            return Response(400, {"detail": "No capacity available for %s x%d at %s; the offer is no longer available"
                                            % (offer["gpuType"], offer["gpuCount"], offer["dataCenter"])})
        pid = new_id(self.emu.rng, 32, "0123456789abcdef")
        price = offer["prices"]["onDemand"] or offer["prices"]["communityPrice"]
        pod = {"id": pid, "input": pod_in, "provider": offer["provider"], "offer": offer, "polls": 0,
               "failed": "instance_failed" in kinds, "price": price, "t0": time.time(),
               "fail_status": (kinds.get("instance_failed") or {}).get("status", "ERROR"),
               "created": iso_now(), "team": (body.get("team") or {}).get("teamId")}
        self.pods[pid] = pod
        return Response(200, self._view(pod))

    def _observe(self, pod, kinds):
        if "instance_failed" in kinds:
            pod["failed"] = True
        pod["polls"] += 1

    def _phase(self, pod):
        if pod["failed"]:
            return "error"
        boot = self.emu.config["boot_polls"]
        if pod["polls"] > boot:
            return "ready"
        if pod["polls"] == boot and boot > 0:
            return "installing"
        return "provisioning"

    def _view(self, pod):
        cfg = self.emu.config
        as_list = cfg.get("ssh_connection_format") == "list"
        phase = self._phase(pod)
        offer, inp = pod["offer"], pod["input"]
        user = cfg.get("ssh_user") or "root"
        ssh = ip = None
        ports = []
        if phase == "ready":
            ssh = "%s@%s -p %d" % (user, cfg["ssh_host"], cfg["ssh_port"])
            ip = cfg["ssh_host"]
            ports = [{"internal": "22", "external": str(cfg["ssh_port"]), "protocol": "TCP",
                      "usedBy": "SSH", "description": "SSH"}]
        if as_list:
            ssh, ip = [ssh], [ip]
        status = {"provisioning": "PROVISIONING", "installing": "ACTIVE", "ready": "ACTIVE",
                  "error": pod.get("fail_status", "ERROR")}[phase]
        if pod.get("deleting") is not None:
            status = "DELETING"
        install = {"provisioning": ("PENDING", 0), "installing": ("INSTALLING", 60),
                   "ready": ("FINISHED", 100), "error": ("FAILED", 0)}[phase]
        return {
            "id": pod["id"], "name": inp.get("name"), "gpuName": offer["gpuType"], "gpuType": offer["gpuType"],
            "gpuCount": offer["gpuCount"], "socket": offer["socket"], "status": status,
            "createdAt": pod["created"], "updatedAt": iso_now(), "terminatedAt": None,
            "providerType": pod["provider"], "installationStatus": install[0],
            "installationFailure": "Provisioning failed at the underlying provider" if phase == "error" else None,
            "installationProgress": install[1], "teamId": pod["team"], "userId": "user_emulator",
            "walletId": "wallet_emulator", "type": "HOSTED",
            "resources": {"disk": inp.get("diskSize") or offer["disk"]["defaultCount"],
                          "vcpus": inp.get("vcpus") or offer["vcpu"]["defaultCount"],
                          "memory": inp.get("memory") or offer["memory"]["defaultCount"]},
            "attachedResources": [], "primePortMapping": ports, "sshConnection": ssh, "ip": ip,
            "priceHr": pod["price"], "stoppedPriceHr": 0.01, "provisioningPriceHr": 0.0,
            "basePriceHr": pod["price"], "baseCurrency": "USD", "environmentType": inp.get("image"),
            "jupyterPassword": inp.get("jupyterPassword"), "customTemplateId": inp.get("customTemplateId"),
            "isSpot": False, "autoRestart": bool(inp.get("autoRestart")),
            "dataCenterId": offer["dataCenter"], "cloudId": offer["cloudId"],
            "envVars": inp.get("envVars") or [],
        }
