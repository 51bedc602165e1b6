#!/usr/bin/env python3
"""Quick human-facing self-check of the four emulators: starts each one, searches offers, creates
an instance, polls it to running (checking the SSH endpoint), lists, terminates, checks an auth
failure and a few faults. Prints one line per check; exits non-zero on the first failure.

  python3 tests/emulators/selfcheck.py [runpod vast lambda primeintellect]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "selfcheck-key"


class Emu:
    def __init__(self, provider):
        self.dir = tempfile.mkdtemp(prefix="emu-selfcheck-")
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "emulator.py"), "--provider", provider,
                                      "--port-file", port_file, "--api-key", KEY])
        deadline = time.time() + 10
        while not os.path.exists(port_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("selfcheck: %s emulator did not start" % provider)
            time.sleep(0.05)
        self.base = "http://127.0.0.1:%d" % int(open(port_file).read())

    def call(self, method, path, body=None, key=KEY, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", "Bearer " + key)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null"), dict(r.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw), dict(e.headers)
            except ValueError:
                return e.code, raw, dict(e.headers)

    def control(self, path, body=None):
        return self.call("POST" if body is not None else "GET", "/_emulator/" + path, body, key=None)[1]

    def close(self):
        self.proc.terminate()
        self.proc.wait(5)


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what)
    if not cond:
        raise SystemExit(1)


def gql(emu, query, variables=None, key=KEY):
    return emu.call("POST", "/graphql", {"query": query, "variables": variables or {}}, key=key)


def check_runpod(emu):
    s, r, _ = gql(emu, "{ gpuTypes { id memoryInGb securePrice communityPrice "
                       "lowestPrice(input: {gpuCount: 1, secureCloud: true}) { uninterruptablePrice stockStatus } } }",
                  key=None)
    check(s == 200 and any(g["id"] == "NVIDIA H100 80GB HBM3" for g in r["data"]["gpuTypes"]), "gpuTypes, unauthenticated")
    create = ("mutation Create($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) "
              "{ id desiredStatus machine { podHostId } } }")
    inp = {"gpuTypeId": "NVIDIA H100 80GB HBM3", "gpuCount": 1, "cloudType": "SECURE", "name": "sc-1",
           "imageName": "runpod/pytorch", "supportPublicIp": True, "ports": "22/tcp", "startSsh": True,
           "terminateAfter": "2099-01-01T00:00:00Z"}
    s, r, _ = gql(emu, create, {"input": inp})
    pod = r["data"]["podFindAndDeployOnDemand"]["id"]
    check(s == 200 and pod, "podFindAndDeployOnDemand ($input variables)")
    seen = []
    for _ in range(4):
        s, r, _ = gql(emu, '{ pod(input: {podId: "%s"}) { desiredStatus runtime { ports { ip isIpPublic privatePort publicPort } } } }' % pod)
        seen.append(r["data"]["pod"]["runtime"])
    check(seen[0] is None and seen[1] is None and seen[2]["ports"][0]["publicPort"] == 2222, "runtime null, then public 22")
    s, r, _ = gql(emu, '{ myself { pods { id name } } }', key="wrong")
    check(s == 401, "bad key -> 401")
    emu.control("faults", {"faults": [{"kind": "capacity", "count": 1}]})
    s, r, _ = gql(emu, create, {"input": inp})
    check(s == 200 and r["errors"][0]["extensions"]["code"] == "SUPPLY_CONSTRAINT", "capacity fault -> HTTP 200 errors[]")
    s, r, _ = gql(emu, 'mutation { podTerminate(input: {podId: "%s"}) }' % pod)
    check(s == 200 and r["data"]["podTerminate"] is None, "podTerminate (inline input)")
    s, r, _ = gql(emu, '{ myself { pods { id } } }')
    check(r["data"]["myself"]["pods"] == [], "terminated pod dropped out of myself.pods")


def check_vast(emu):
    s, r, _ = emu.call("POST", "/api/v0/bundles/", {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"gte": "2"},
                                                     "rentable": {"eq": True}, "order": [["dph_total", "asc"]],
                                                     "type": "on-demand", "allocated_storage": 10})
    offers = r["offers"]
    check(s == 200 and offers and all(o["num_gpus"] >= 2 and o["gpu_name"] == "RTX 4090" for o in offers),
          "bundles search with operators (%d offers)" % len(offers))
    check(offers == sorted(offers, key=lambda o: o["dph_total"]), "ordered by dph_total")
    ask = offers[0]["id"]
    s, r, _ = emu.call("PUT", "/api/v0/asks/%d/" % ask, {"client_id": "me", "image": "pytorch/pytorch",
                                                         "disk": 20, "label": "sc-1", "runtype": "ssh", "price": None})
    iid = r["new_contract"]
    check(s == 200 and r["success"] and iid, "create (on-demand)")
    states = [emu.call("GET", "/api/v0/instances/%d/" % iid)[1]["instances"]["actual_status"] for _ in range(3)]
    check(states == [None, "loading", "running"], "actual_status null -> loading -> running")
    inst = emu.call("GET", "/api/v0/instances/%d/" % iid)[1]["instances"]
    check(inst["ports"]["22/tcp"][0]["HostPort"] == "2222", "HostPort is a string")
    s, r, _ = emu.call("PUT", "/api/v0/asks/%d/" % ask, {"client_id": "me", "image": "x"})
    check(s == 404 and r["error"] == "no_such_ask", "ask rented once")
    s, r, _ = emu.call("DELETE", "/api/v0/instances/%d/" % iid, {})
    check(r == {"success": True}, "destroy")
    check(emu.call("GET", "/api/v0/instances/%d/" % iid)[1] == {"instances": None}, "show after destroy -> null")
    s, r, _ = emu.call("GET", "/api/v0/instances/", key="wrong")
    check(s == 401 and r["success"] is False, "bad key -> 401")


def check_lambda(emu):
    s, r, _ = emu.call("GET", "/api/v1/instance-types")
    t = r["data"]["gpu_1x_h100_sxm5"]
    check(s == 200 and t["instance_type"]["price_cents_per_hour"] == 329 and t["regions_with_capacity_available"],
          "instance-types")
    s, r, _ = emu.call("POST", "/api/v1/instance-operations/launch",
                       {"region_name": "us-south-1", "instance_type_name": "gpu_1x_h100_sxm5",
                        "ssh_key_names": ["emulator-key"], "quantity": 1, "name": "sc-1"})
    iid = r["data"]["instance_ids"][0]
    check(s == 200 and iid, "launch")
    seen = [emu.call("GET", "/api/v1/instances/" + iid)[1]["data"] for _ in range(3)]
    check([x["status"] for x in seen] == ["booting", "booting", "active"] and seen[0]["ip"] is None
          and seen[2]["ip"] == "127.0.0.1", "booting (ip null) -> active")
    s, r, _ = emu.call("POST", "/api/v1/instance-operations/launch",
                       {"region_name": "us-south-1", "instance_type_name": "gpu_8x_h100_sxm5",
                        "ssh_key_names": ["emulator-key"]})
    check(s == 400 and r["error"]["code"] == "instance-operations/launch/insufficient-capacity", "no capacity")
    s, r, _ = emu.call("POST", "/api/v1/instance-operations/terminate", {"instance_ids": [iid]})
    check(r["data"]["terminated_instances"][0]["status"] == "terminating", "terminate")
    import base64
    basic = "Basic " + base64.b64encode((KEY + ":").encode()).decode()
    s, r, _ = emu.call("GET", "/api/v1/instances", key=None, headers={"Authorization": basic})
    check(s == 200, "HTTP Basic KEY: accepted")
    s, r, _ = emu.call("GET", "/api/v1/instances", key="wrong")
    check(s == 401 and r["error"]["code"] == "global/invalid-api-key", "bad key -> 401 envelope")


def check_prime(emu):
    s, r, _ = emu.call("GET", "/api/v1/availability/gpus?gpu_type=H100_80GB&gpu_count=1&page=1&page_size=100")
    check(s == 200 and r["totalCount"] >= 1 and all(o["gpuType"] == "H100_80GB" for o in r["items"]), "availability/gpus")
    o = r["items"][0]
    body = {"pod": {"name": "sc-1", "cloudId": o["cloudId"], "gpuType": o["gpuType"], "socket": o["socket"],
                    "gpuCount": 1, "image": "ubuntu_22_cuda_12", "dataCenterId": o["dataCenter"],
                    "security": o["security"]}, "provider": {"type": o["provider"]}}
    bad = json.loads(json.dumps(body))
    bad["pod"]["image"] = "runpod/pytorch:2.1"
    s, r, _ = emu.call("POST", "/api/v1/pods/", bad)
    check(s == 400 and "Image" in r["detail"], "Docker image refused")
    s, r, _ = emu.call("POST", "/api/v1/pods/", body)
    pid = r["id"]
    check(s == 200 and r["status"] == "PROVISIONING", "create -> PROVISIONING")
    seen = [emu.call("GET", "/api/v1/pods/" + pid)[1] for _ in range(3)]
    check([x["status"] for x in seen] == ["PROVISIONING", "ACTIVE", "ACTIVE"]
          and seen[1]["installationStatus"] == "INSTALLING" and seen[1]["sshConnection"] is None
          and seen[2]["sshConnection"] == "root@127.0.0.1 -p 2222", "PROVISIONING -> ACTIVE installing -> ready")
    s, r, _ = emu.call("DELETE", "/api/v1/pods/" + pid)
    check(s == 200 and emu.call("GET", "/api/v1/pods/" + pid)[0] == 404, "delete -> 404 after")
    s, r, _ = emu.call("GET", "/api/v1/pods", key="wrong")
    check(s == 401 and r == {"detail": "Authorization failed"}, "bad key -> 401")


def main():
    wanted = sys.argv[1:] or ["runpod", "vast", "lambda", "primeintellect"]
    checks = {"runpod": check_runpod, "vast": check_vast, "lambda": check_lambda, "primeintellect": check_prime}
    for name in wanted:
        print(name)
        emu = Emu(name)
        try:
            emu.control("config", {"ssh_port": 2222, "boot_polls": 2})
            checks[name](emu)
            faults = emu.control("state")["faults"]
            check(all(f["remaining"] == 0 for f in faults), "every injected fault consumed")
            emu.control("faults", {"faults": [{"kind": "http_status", "status": 503, "retry_after_s": 2, "count": 2}]})
            r1, r2, r3 = (emu.call("GET" if name != "runpod" else "POST",
                                   "/graphql" if name == "runpod" else "/api/v1/instances",
                                   {"query": "{ myself { id } }"} if name == "runpod" else None) for _ in range(3))
            check(r1[0] == 503 and r1[2].get("Retry-After") == "2" and r2[0] == 503 and r3[0] != 503,
                  "http_status 503 fired exactly twice, with Retry-After")
            state = emu.control("state")
            check(all("selfcheck-key" not in json.dumps(x) for x in state["requests"]), "request log holds no key")
        finally:
            emu.close()
    print("selfcheck: all passed")


if __name__ == "__main__":
    main()
