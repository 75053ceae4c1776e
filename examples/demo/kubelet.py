"""Plays the kubelet's part for the demo's pods, openly: there is no kubelet in flmon's test
environment, so this process starts each scheduled pod's containers as local processes.

For every pod in the watched namespace that is Pending and has no podIP it
- gives the pod its own network namespace (`ip netns add`) joined to a bridge by a veth pair, so
  every pod has its own 127.0.0.1 and its own address, as in Kubernetes;
- gives the pod one process namespace with its own /proc, which all its containers join, as
  `shareProcessNamespace: true` does (the webhook sets it): the agent sees the app's processes
  and nothing else of this machine, so CPU and memory are the pod's;
- starts its native sidecars (init containers with `restartPolicy: Always`) and its containers as
  processes inside that namespace, with the pod's env resolved as the kubelet would (`value`,
  Downward API `fieldRef` and `resourceFieldRef`, `secretKeyRef`), mapping each image to a local
  program (`--image IMAGE=PROGRAM`);
- patches the pod's status to Running with its podIP and Ready containers;
- when the app containers exit, marks the pod Succeeded or Failed and stops its sidecars.

    kubelet.py --kubeconfig K --namespace fl-demo --bridge flmon0 --subnet 10.77.0 \
        --image ghcr.io/flmon/flmon-agent=/path/flmon-agent --image python:3.12-slim=/path/python \
        --logs DIR
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(msg: str) -> None:
    print(f"[kubelet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Kubectl:
    def __init__(self, kubeconfig: str, kubectl: str):
        self.base = [kubectl, "--kubeconfig", kubeconfig]

    def json(self, *args: str) -> dict:
        out = subprocess.run(self.base + list(args) + ["-o", "json"], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        subprocess.run(self.base + ["-n", namespace, "patch", "pod", name, "--subresource=status",
                                    "--type=merge", "-p", json.dumps({"status": status})],
                       check=True, capture_output=True, text=True)


def quantity(q: str, divisor: str | None) -> str:
    """A resource quantity divided by `divisor`, rounded up, as the Downward API reports it."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4}

    def parse(s: str) -> float:
        for suffix in sorted(units, key=len, reverse=True):
            if s.endswith(suffix):
                return float(s[: -len(suffix)]) * units[suffix]
        return float(s)

    # The apiserver defaults an absent divisor to "0", which means 1.
    d = parse(divisor or "1")
    value = parse(q) / (d if d > 0 else 1.0)
    return str(int(-(-value // 1)))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class Pod:
    def __init__(self, kubelet: "Kubelet", pod: dict, index: int):
        self.k = kubelet
        self.pod = pod
        self.name = pod["metadata"]["name"]
        self.ns = pod["metadata"]["namespace"]
        self.ip = f"{kubelet.args.subnet}.{10 + index}"
        self.netns = f"flmon-{index}"
        self.sidecars: list[subprocess.Popen] = []
        self.apps: list[tuple[str, subprocess.Popen]] = []
        self.pause: subprocess.Popen | None = None
        self.pause_pid = 0

    # -- networking -------------------------------------------------------------------------------
    def setup_network(self) -> None:
        veth, peer = f"fv{self.netns[6:]}h", f"fv{self.netns[6:]}p"
        cmds = [
            f"ip netns add {self.netns}",
            f"ip link add {veth} type veth peer name {peer}",
            f"ip link set {peer} netns {self.netns}",
            f"ip link set {veth} master {self.k.args.bridge} up",
            f"ip netns exec {self.netns} ip link set lo up",
            f"ip netns exec {self.netns} ip addr add {self.ip}/24 dev {peer}",
            f"ip netns exec {self.netns} ip link set {peer} up",
            f"ip netns exec {self.netns} ip route add default via {self.k.args.subnet}.1",
        ]
        for c in cmds:
            subprocess.run(shlex.split(c), check=True, capture_output=True, text=True)

    # -- processes --------------------------------------------------------------------------------
    def setup_processes(self) -> None:
        """The pod's shared process namespace: a pause process as its pid 1, in the pod's network
        namespace, with a /proc of its own; containers join it with nsenter."""
        # Like Kubernetes' pause container, pid 1 is named `pause` (the agent leaves it out of the
        # pod's usage, as it does the real one) and reaps the orphans it adopts.
        reaper = ("import os, time\n"
                  "open('/proc/self/comm', 'w').write('pause')\n"
                  "while True:\n"
                  "    try:\n"
                  "        os.wait()\n"
                  "    except ChildProcessError:\n"
                  "        time.sleep(0.2)\n")
        self.pause = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--pid", "--fork", "--mount-proc",
             sys.executable, "-c", reaper],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        children = f"/proc/{self.pause.pid}/task/{self.pause.pid}/children"
        for _ in range(100):
            try:
                with open(children) as f:
                    first = f.read().split()
            except FileNotFoundError:
                first = []
            if first:
                self.pause_pid = int(first[0])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.ns}/{self.name}: the pod's pause process did not start")

    # -- env --------------------------------------------------------------------------------------
    def resolve_env(self, container: dict) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp",
               "PYTHONUNBUFFERED": "1", "HOSTNAME": self.name}
        meta = self.pod["metadata"]
        fields = {
            "metadata.name": self.name, "metadata.namespace": self.ns, "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": self.k.args.node_name, "status.podIP": self.ip, "status.hostIP": f"{self.k.args.subnet}.1",
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
        }
        containers = {c["name"]: c for c in self.pod["spec"].get("containers", []) + self.pod["spec"].get("initContainers", [])}
        for e in container.get("env", []):
            name = e["name"]
            if "value" in e:
                # $(VAR) names an earlier variable of the container, as in Kubernetes.
                value = e["value"]
                for k_, v_ in env.items():
                    value = value.replace(f"$({k_})", v_)
                env[name] = value
                continue
            src = e.get("valueFrom", {})
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                if path.startswith("metadata.labels['"):
                    env[name] = meta.get("labels", {}).get(path[len("metadata.labels['"):-2], "")
                elif path.startswith("metadata.annotations['"):
                    env[name] = meta.get("annotations", {}).get(path[len("metadata.annotations['"):-2], "")
                else:
                    env[name] = fields.get(path, "")
            elif "resourceFieldRef" in src:
                ref = src["resourceFieldRef"]
                target = containers.get(ref.get("containerName") or container["name"], container)
                kind, _, res = ref["resource"].partition(".")
                q = target.get("resources", {}).get(kind, {}).get(res)
                if q is None:  # no limit: the kubelet reports node allocatable
                    q = str(os.cpu_count()) if res == "cpu" else str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
                env[name] = quantity(q, ref.get("divisor"))
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                try:
                    secret = self.k.kubectl.json("-n", self.ns, "get", "secret", ref["name"])
                    import base64
                    env[name] = base64.b64decode(secret["data"][ref["key"]]).decode()
                except Exception:
                    if not ref.get("optional"):
                        raise
        return env

    def command(self, container: dict) -> list[str]:
        image = container.get("image", "")
        program = None
        for prefix, local in self.k.images:
            if image.startswith(prefix):
                program = local
        if program is None:
            raise RuntimeError(f"no local program for image {image!r} (add --image {image.split(':')[0]}=PROGRAM)")
        cmd = container.get("command") or []
        args = container.get("args") or []
        if cmd:
            # The image's entrypoint is replaced: the first word names a program inside the image,
            # which is the local program here.
            return [program] + cmd[1:] + args
        return [program] + args

    def start(self, container: dict, sidecar: bool) -> subprocess.Popen:
        env = self.resolve_env(container)
        cmd = self.command(container)
        logf = open(os.path.join(self.k.args.logs, f"{self.name}.{container['name']}.log"), "w")
        # Into the pod's network, mount (its /proc) and process namespaces, in the work folder.
        enter = ["nsenter", "--target", str(self.pause_pid), "--net", "--mount", "--pid",
                 f"--wd={os.path.abspath(self.k.args.workdir)}", "--"]
        proc = subprocess.Popen(enter + cmd, env=env, stdout=logf,
                                stderr=subprocess.STDOUT, cwd=self.k.args.workdir, start_new_session=True)
        log(f"{self.ns}/{self.name}: started {'sidecar' if sidecar else 'container'} {container['name']} "
            f"({os.path.basename(cmd[0])}) at {self.ip}")
        return proc

    def run(self) -> None:
        self.setup_network()
        self.setup_processes()
        spec = self.pod["spec"]
        statuses = []
        for c in spec.get("initContainers", []):
            if c.get("restartPolicy") == "Always":
                self.sidecars.append(self.start(c, True))
                statuses.append(c["name"])
        time.sleep(0.5)
        for c in spec.get("containers", []):
            self.apps.append((c["name"], self.start(c, False)))
        self.patch_running([c["name"] for c in spec.get("containers", [])], statuses)

    def patch_running(self, containers: list[str], sidecars: list[str]) -> None:
        t = now()

        def cs(name: str, image: str) -> dict:
            return {"name": name, "image": image, "imageID": "", "ready": True, "started": True,
                    "restartCount": 0, "state": {"running": {"startedAt": t}}}
        images = {c["name"]: c.get("image", "") for c in self.pod["spec"].get("containers", []) + self.pod["spec"].get("initContainers", [])}
        status = {
            "phase": "Running", "podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": f"{self.k.args.subnet}.1",
            "startTime": t,
            "conditions": [{"type": t_, "status": "True", "lastTransitionTime": t}
                           for t_ in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [cs(n, images[n]) for n in containers],
            "initContainerStatuses": [cs(n, images[n]) for n in sidecars],
        }
        self.k.kubectl.patch_status(self.ns, self.name, status)
        log(f"{self.ns}/{self.name}: Running at {self.ip}")

    def poll(self) -> bool:
        """True once every app container has exited (then the pod is finished)."""
        if not self.apps or any(p.poll() is None for _, p in self.apps):
            return False
        failed = any(p.returncode != 0 for _, p in self.apps)
        self.stop()
        phase = "Failed" if failed else "Succeeded"
        try:
            self.k.kubectl.patch_status(self.ns, self.name, {"phase": phase, "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now(), "reason": "PodCompleted"}]})
        except subprocess.CalledProcessError:
            pass
        log(f"{self.ns}/{self.name}: {phase}")
        return True

    def stop(self) -> None:
        for p in self.sidecars + [p for _, p in self.apps]:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        # Each container's whole process group: nsenter itself ends on SIGTERM at once, while the
        # program it started may take its grace period (the agent shuts NVML and Kafka down).
        deadline = time.monotonic() + 10
        for p in self.sidecars + [p for _, p in self.apps]:
            while group_alive(p.pid) and time.monotonic() < deadline:
                p.poll()
                time.sleep(0.05)
            if group_alive(p.pid):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        # The pod's pid 1 last: whatever is left in its process namespace ends with it.
        if self.pause is not None and self.pause.poll() is None:
            os.killpg(self.pause.pid, signal.SIGKILL)
            self.pause.wait()

    def teardown(self) -> None:
        self.stop()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


class Kubelet:
    def __init__(self, args):
        self.args = args
        self.kubectl = Kubectl(args.kubeconfig, args.kubectl)
        self.images = [tuple(i.split("=", 1)) for i in args.image]
        self.pods: dict[str, Pod] = {}
        self.done: set[str] = set()
        self.stopping = threading.Event()

    def setup_bridge(self) -> None:
        b = self.args.bridge
        subprocess.run(["ip", "link", "del", b], capture_output=True)
        for c in [f"ip link add {b} type bridge", f"ip addr add {self.args.subnet}.1/24 dev {b}", f"ip link set {b} up"]:
            subprocess.run(shlex.split(c), check=True, capture_output=True, text=True)

    def loop(self) -> None:
        index = 0
        while not self.stopping.is_set():
            try:
                pods = self.kubectl.json("-n", self.args.namespace, "get", "pods")["items"]
            except subprocess.CalledProcessError as e:
                log(f"listing pods failed: {e.stderr.strip()}")
                time.sleep(1)
                continue
            for pod in pods:
                uid = pod["metadata"]["uid"]
                if uid in self.pods or uid in self.done or pod.get("status", {}).get("podIP"):
                    continue
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                index += 1
                p = Pod(self, pod, index)
                self.pods[uid] = p
                try:
                    p.run()
                except Exception as e:
                    import traceback
                    log(f"{p.ns}/{p.name}: cannot start: {e!r}\n{traceback.format_exc()}")
            for uid, p in list(self.pods.items()):
                if p.poll():
                    self.done.add(uid)
            time.sleep(1)

    def shutdown(self, *_):
        self.stopping.set()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--bridge", default="flmon0")
    ap.add_argument("--subnet", default="10.77.0", help="first three octets of the pod network")
    ap.add_argument("--node-name", default="flmon-demo-node")
    ap.add_argument("--image", action="append", default=[], help="IMAGE_PREFIX=LOCAL_PROGRAM")
    ap.add_argument("--logs", required=True)
    ap.add_argument("--workdir", default=os.getcwd())
    args = ap.parse_args(argv)
    os.makedirs(args.logs, exist_ok=True)
    k = Kubelet(args)
    if subprocess.run(["ip", "link", "show", args.bridge], capture_output=True).returncode != 0:
        k.setup_bridge()
    signal.signal(signal.SIGTERM, k.shutdown)
    signal.signal(signal.SIGINT, k.shutdown)
    log(f"playing the kubelet for namespace {args.namespace}: pods get network namespaces on {args.subnet}.0/24")
    try:
        k.loop()
    finally:
        for p in k.pods.values():
            p.teardown()
        subprocess.run(["ip", "link", "del", args.bridge], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
