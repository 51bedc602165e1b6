#!/usr/bin/env python3
"""Seed corpus for fuzz/provider_json_fuzz.cpp, from real answers of the provider emulators.

  python3 fuzz/provider_json_seeds.py OUT_DIR

Starts each emulator (tests/emulators/emulator.py) on loopback, creates an instance where the
answer needs one, records the bodies of the calls the broker makes, and writes each as a seed:
byte 0 = the fuzz target's parser index, byte 1 = its flags, then the body (see
fuzz/provider_json_check.h for the index table). Standard library only.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "..", "tests", "emulators", "emulator.py")
KEY = "seed-key"


class Emu:
    def __init__(self, provider):
        self.dir = tempfile.mkdtemp(prefix="seed-")
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([sys.executable, EMULATOR, "--provider", provider, "--port-file", port_file,
                                      "--api-key", KEY], stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        self.base = "http://127.0.0.1:%d" % int(open(port_file).read())
        self.call("POST", "/_emulator/config", {"boot_polls": 0})

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            return e.read()

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = []

    def add(target, flags, body):
        seeds.append(bytes([target, flags]) + (body if isinstance(body, bytes) else body.encode()))

    pod_fields = ("id name imageName desiredStatus costPerHr gpuCount memoryInGb vcpuCount containerDiskInGb "
                  "uptimeSeconds lastStatusChange podType machine { podHostId gpuDisplayName location } "
                  "runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } gpus { id } }")
    rp = Emu("runpod")
    q = ("query GpuTypes($lowestPrice: GpuLowestPriceInput) { gpuTypes { id displayName manufacturer memoryInGb "
         "secureCloud communityCloud securePrice communityPrice secureSpotPrice communitySpotPrice maxGpuCount "
         "lowestPrice(input: $lowestPrice) { minimumBidPrice uninterruptablePrice stockStatus maxUnreservedGpuCount "
         "availableGpuCounts countryCode } } dataCenters { id name location gpuAvailability { gpuTypeId stockStatus } } }")
    for secure, flags in ((True, 0x10), (False, 0x01)):
        add(0, flags, rp.call("POST", "/graphql", {"query": q, "variables": {"lowestPrice": {"gpuCount": 1, "secureCloud": secure}}}))
    created = json.loads(rp.call("POST", "/graphql", {
        "query": "mutation D($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) { id } }",
        "variables": {"input": {"gpuTypeId": "NVIDIA GeForce RTX 4090", "cloudType": "SECURE", "gpuCount": 1,
                                "name": "tk-seed-main-dl4000000000", "ports": "22/tcp", "supportPublicIp": True}}}))
    pod_id = created["data"]["podFindAndDeployOnDemand"]["id"]
    add(1, 0, rp.call("POST", "/graphql", {"query": "query P($input: PodFilter) { pod(input: $input) { %s } }" % pod_fields,
                                           "variables": {"input": {"podId": pod_id}}}))
    add(2, 0, rp.call("POST", "/graphql", {"query": "query Pods { myself { pods { %s } } }" % pod_fields}))
    add(3, 0, b'{"errors": [{"message": "There are no longer any instances available", "extensions": {"code": "SUPPLY_CONSTRAINT"}}], "data": null}')
    rp.close()

    va = Emu("vast")
    offers = va.call("POST", "/api/v0/bundles/", {"allocated_storage": 50, "limit": 20})
    add(4, 0, offers)
    add(4, 101, offers)
    ask = json.loads(offers)["offers"][0]["id"]
    create = va.call("PUT", "/api/v0/asks/%d/" % ask, {"client_id": "me", "image": "x", "disk": 50, "label": "tk-seed-main-dl4000000000"})
    add(7, 0, create)
    add(7, 0, b'{"success": false, "error": "insufficient_bid", "msg": "bid too low", "new_contract": 7835611}')
    contract = json.loads(create)["new_contract"]
    add(5, 0, va.call("GET", "/api/v0/instances/%d/?owner=me" % contract))
    add(5, 0, b'{"instances": null}')
    add(6, 0, va.call("GET", "/api/v1/instances/?limit=100"))
    va.close()

    la = Emu("lambda")
    add(8, 0, la.call("GET", "/api/v1/instance-types"))
    add(12, 0, la.call("GET", "/api/v1/ssh-keys"))
    launch = la.call("POST", "/api/v1/instance-operations/launch", {
        "region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["emulator-key"],
        "quantity": 1, "name": "tk-seed-main-dl4000000000"})
    add(11, 0, launch)
    iid = (json.loads(launch).get("data") or {}).get("instance_ids", ["x"])[0]
    add(10, 0, la.call("GET", "/api/v1/instances/" + iid))
    add(9, 0, la.call("GET", "/api/v1/instances"))
    add(10, 3, la.call("GET", "/api/v1/instances/nope"))
    la.close()

    pr = Emu("primeintellect")
    avail = pr.call("GET", "/api/v1/availability/gpus?page=1&page_size=100")
    add(13, 0, avail)
    offer = json.loads(avail)["items"][0]
    pod = pr.call("POST", "/api/v1/pods/", {
        "pod": {"cloudId": offer["cloudId"], "gpuType": offer["gpuType"], "gpuCount": offer["gpuCount"],
                "name": "tk-seed-main-dl4000000000", "image": offer["images"][0]},
        "provider": {"type": offer["provider"]}})
    add(14, 0, pod)
    pid = json.loads(pod).get("id", "x")
    add(14, 0, pr.call("GET", "/api/v1/pods/" + pid))
    add(15, 0, pr.call("GET", "/api/v1/pods?offset=0&limit=100"))
    add(16, 0, b'"root@1.2.3.4 -p 22000"')
    add(16, 0, b'[null]')
    pr.close()

    add(17, 0, b'[[[[{"a": [1, 2.5e3, "x\\u00e9", true, null]}]]]]')
    for i, s in enumerate(seeds):
        with open(os.path.join(out, "seed-%02d" % i), "wb") as f:
            f.write(s)
    print("%d seeds in %s" % (len(seeds), out))


if __name__ == "__main__":
    main()
