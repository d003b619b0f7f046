#!/usr/bin/env python3
"""Deploying one changed proxy to a managed gateway that serves N guarded
proxies (default 1,000), measured end to end through admin.

Starts the mock LLM, a hub with the built-in policies, admin and one
managed gateway; creates N proxies through admin's REST API, each with a
key and the four built-ins (token-rate-limit, pii-masking, guardrails,
cache), deploys them all and waits until the gateway serves every one.
Then, ROUNDS times: changes proxy p1's token limit, deploys p1, and times
until a request to p1 answers with the new limit in its
`x-ratelimit-limit-tokens` header. Prints one JSON line.

    BIN=target/release/portcullis WASM=target/wasm32-wasip2/release \
        python3 scripts/bench-deploy.py [N] [ROUNDS]

Needs httpx (installed with the OpenAI Python client: tests/python/requirements.txt).
"""

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import httpx
except ImportError:  # newer OpenAI clients ship it as httpx2
    import httpx2 as httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("BIN", os.path.join(TARGET, "release", "portcullis"))
WASM = os.environ.get("WASM", os.path.join(TARGET, "wasm32-wasip2", "release"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
POLICIES = ["token-rate-limit", "pii-masking", "guardrails", "cache"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until_ok(client, url, within=60.0):
    started = time.monotonic()
    while True:
        try:
            r = await client.get(url)
            if r.status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > within:
            raise SystemExit(f"{url} did not come up")
        await asyncio.sleep(0.05)


def limit_settings(limit):
    return {"limits": [{"metric": "total_tokens", "limit": limit, "window": "minute"}]}


async def main():
    work = tempfile.mkdtemp(prefix="bench-deploy-")
    procs = []

    def spawn(args, log, env=None):
        p = subprocess.Popen(
            [BIN, *args],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, log), "w"),
            env={**os.environ, **(env or {})},
        )
        procs.append(p)
        return p

    try:
        builtins = os.path.join(work, "builtins")
        for name in POLICIES:
            d = os.path.join(builtins, name)
            os.makedirs(d)
            crate = "portcullis_policy_" + name.replace("-", "_")
            shutil.copy(os.path.join(WASM, crate + ".wasm"), os.path.join(d, "policy.wasm"))
            shutil.copy(os.path.join(ROOT, "policies", name, "policy.json"), os.path.join(d, "manifest.json"))
        mock_port, hub_port, admin_port = free_port(), free_port(), free_port()
        gw_port, ops_port = free_port(), free_port()
        spawn(["mock-llm", "--port", str(mock_port)], "mock.log")
        spawn(["hub", "--listen", f"127.0.0.1:{hub_port}", "--data-dir", os.path.join(work, "hub"),
               "--builtin-dir", builtins], "hub.log")
        hub = f"http://127.0.0.1:{hub_port}"
        admin = f"http://127.0.0.1:{admin_port}"
        gateway = f"http://127.0.0.1:{gw_port}"
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(timeout=60, limits=limits) as plain:
            await until_ok(plain, f"{hub}/api/v1/policies")
            spawn(["admin", "--listen", f"127.0.0.1:{admin_port}", "--data-dir", os.path.join(work, "admin"),
                   "--hub-url", hub], "admin.log", {"PORTCULLIS_ADMIN_TOKEN": ADMIN_TOKEN})
            await until_ok(plain, f"{admin}/api/v1/proxies")
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=f"{admin}/api/v1", headers=headers, timeout=60,
                                     limits=limits) as api:

            async def ok(method, path, body=None):
                r = await api.request(method, path, json=body)
                if r.status_code >= 300:
                    raise SystemExit(f"{method} {path}: {r.status_code} {r.text}")
                return r.json() if r.content else None

            await ok("POST", "/providers", {"name": "mock", "type": "openai",
                                            "base_url": f"http://127.0.0.1:{mock_port}/v1",
                                            "models": ["gpt-5-mini"], "credentials": {"api_key": "sk-mock"}})
            reg = await ok("POST", "/gateways", {"name": "edge", "url": gateway})
            spawn(["gateway", "--admin", admin, "--token", reg["token"], "--listen", f"127.0.0.1:{gw_port}",
                   "--ops-listen", f"127.0.0.1:{ops_port}", "--data-dir", os.path.join(work, "gw")], "gw.log")

            keys = {}
            attachment = {}
            sem = asyncio.Semaphore(16)

            async def make(i):
                async with sem:
                    pid = f"p{i}"
                    await ok("POST", "/proxies", {"name": pid})
                    for name in POLICIES:
                        attach = {"name": name, "version": "0.1.0"}
                        if name == "token-rate-limit":
                            attach["settings"] = limit_settings(10**9)
                        a = await ok("POST", f"/proxies/{pid}/policies", attach)
                        if name == "token-rate-limit":
                            attachment[pid] = a["id"]
                    keys[pid] = (await ok("POST", f"/proxies/{pid}/keys", {"name": "k"}))["key"]
                    await ok("POST", f"/proxies/{pid}/deployments", {"gateway": reg["id"]})

            t = time.monotonic()
            await asyncio.gather(*(make(i) for i in range(1, N + 1)))
            setup_s = time.monotonic() - t
            t = time.monotonic()
            while True:
                g = await ok("GET", f"/gateways/{reg['id']}")
                if g["proxies_served"] == N and g["in_sync"]:
                    break
                if time.monotonic() - t > 300:
                    raise SystemExit(f"the gateway never served {N} proxies: {json.dumps(g)[:2000]}")
                await asyncio.sleep(0.1)
            first_load_s = time.monotonic() - t

            async with httpx.AsyncClient(timeout=30) as client:
                body = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hello"}]}
                chat = f"{gateway}/p1/chat/completions"
                auth = {"authorization": f"Bearer {keys['p1']}"}
                live = []
                deploy_call = []
                for r in range(ROUNDS):
                    limit = 10**9 + r + 1
                    await ok("PATCH", f"/proxies/p1/policies/{attachment['p1']}",
                             {"settings": limit_settings(limit)})
                    t = time.monotonic()
                    await ok("POST", "/proxies/p1/deployments", {"gateway": reg["id"]})
                    deploy_call.append(time.monotonic() - t)
                    while True:
                        resp = await client.post(chat, json=body, headers=auth)
                        if resp.headers.get("x-ratelimit-limit-tokens") == str(limit):
                            break
                        if time.monotonic() - t > 60:
                            raise SystemExit(f"round {r}: the new limit never showed: {resp.status_code} {dict(resp.headers)}")
                        await asyncio.sleep(0.005)
                    live.append(time.monotonic() - t)
            with open("/proc/%d/status" % procs[-1].pid) as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
            print(json.dumps({
                "proxies": N,
                "setup_s": round(setup_s, 2),
                "first_load_s": round(first_load_s, 2),
                "deploy_call_ms_median": round(statistics.median(deploy_call) * 1000, 1),
                "live_ms": [round(x * 1000) for x in live],
                "live_ms_median": round(statistics.median(live) * 1000),
                "gateway_rss_mb": round(rss / 1024, 1),
            }))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP"):
            print(f"logs in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


asyncio.run(main())
