"""A kubelet's-eye run of Vessel pods through containerd's CRI (runtime.v1 over a unix socket).

Driven by tests/compat/cri.sh, which starts containerd and generates the stubs (api_pb2,
api_pb2_grpc) from api.proto into the directory named by --gen. Each step prints
`cri: ok: ...`; a failed check raises Failed, whose message the script prints before exiting 1.

Usage: scenario.py --socket SOCK --gen DIR --work DIR --image IMG --pause IMG [--seconds N] run|teardown
`run` appends each pod it makes to WORK/pods and removes it at the end; `teardown` stops and
removes the pods still listed there (after a failure, once the failure has been diagnosed).
"""

import argparse
import glob
import os
import subprocess
import sys
import time

CALL_TIMEOUT = 300  # seconds for one CRI call: a microVM boots under the lab's emulated CPU
PAGE = "cri-web-page"


class Failed(Exception):
    """A check of the scenario did not hold."""


START = time.monotonic()
OFFSET = 0  # seconds the calling script had run when this one started (--seconds)


def ok(msg):
    print(f"cri: ok: {msg} ({int(OFFSET + time.monotonic() - START)}s)", flush=True)


def wait_for(what, probe, timeout=120, interval=0.5):
    """Calls probe until it returns a true value, which is returned; Failed after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def vm_count():
    """Processes running a microVM: those with a thread named vcpu0."""
    pids = set()
    for comm in glob.glob("/proc/[0-9]*/task/*/comm"):
        try:
            with open(comm) as f:
                if f.read().strip() == "vcpu0":
                    pids.add(comm.split("/")[2])
        except OSError:
            pass
    return len(pids)


class Cri:
    """The kubelet's side: builds the requests, makes the calls, checks the replies."""

    def __init__(self, grpc, pb, pb_grpc, socket, work):
        self.pb = pb
        channel = grpc.insecure_channel(f"unix://{socket}")
        self.rt = pb_grpc.RuntimeServiceStub(channel)
        self.img = pb_grpc.ImageServiceStub(channel)
        self.work = work

    def call(self, stub, method, request):
        return getattr(stub, method)(request, timeout=CALL_TIMEOUT)

    def ready(self):
        pb = self.pb
        v = self.call(self.rt, "Version", pb.VersionRequest(version="v1"))
        # CRI reports NetworkReady once it has loaded a CNI config from conf_dir.
        def conditions():
            st = self.call(self.rt, "Status", pb.StatusRequest())
            conds = {c.type: c.status for c in st.status.conditions}
            return conds if conds.get("RuntimeReady") and conds.get("NetworkReady") else None
        wait_for("CRI RuntimeReady and NetworkReady", conditions, timeout=60)
        ok(f"CRI {v.runtime_name} {v.runtime_version} (API {v.runtime_api_version}): RuntimeReady, NetworkReady")

    def image_known(self, ref):
        got = self.call(self.img, "ImageStatus", self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=ref)))
        if not got.image.id:
            raise Failed(f"CRI does not know image {ref}")

    def sandbox_config(self, name, pid_mode):
        pb = self.pb
        ns = pb.NamespaceOption(network=pb.POD, pid=pid_mode, ipc=pb.POD)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="vessel-test"),
            hostname=name,
            log_directory=os.path.join(self.work, "logs", name),
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)),
        )

    def run_pod(self, config):
        os.makedirs(config.log_directory, exist_ok=True)
        got = self.call(self.rt, "RunPodSandbox",
                        self.pb.RunPodSandboxRequest(config=config, runtime_handler="vessel"))
        with open(os.path.join(self.work, "pods"), "a") as f:
            f.write(got.pod_sandbox_id + "\n")
        return got.pod_sandbox_id

    def pod_status(self, pod):
        return self.call(self.rt, "PodSandboxStatus", self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status

    def start_container(self, pod, sandbox, name, image, command, pid_mode):
        """CreateContainer + StartContainer; returns the container ID."""
        pb = self.pb
        ns = pb.NamespaceOption(network=pb.POD, pid=pid_mode, ipc=pb.POD)
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=image),
            command=command,
            log_path=f"{name}/0.log",
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=ns)),
        )
        got = self.call(self.rt, "CreateContainer",
                        pb.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=sandbox))
        self.call(self.rt, "StartContainer", pb.StartContainerRequest(container_id=got.container_id))
        return got.container_id

    def container_status(self, cid):
        return self.call(self.rt, "ContainerStatus", self.pb.ContainerStatusRequest(container_id=cid)).status

    def exec_sync(self, cid, cmd, timeout=120):
        return self.call(self.rt, "ExecSync", self.pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout))

    def remove_pod(self, pod):
        self.call(self.rt, "StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        self.call(self.rt, "RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def log_lines(path):
    """The text of a CRI log file's stdout lines (`<time> stdout F <text>`)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [line.split(" ", 3)[3] for line in lines if line.split(" ", 3)[1:3] == ["stdout", "F"]]


def scenario(cri, image, pause):
    pb = cri.pb
    cri.ready()
    cri.image_known(image)
    cri.image_known(pause)
    ok(f"CRI knows {image} and {pause}")

    # Pod 1: each container in its own PID namespace, as the kubelet asks for a v1 pod.
    sb1 = cri.sandbox_config("pod1", pb.CONTAINER)
    pod1 = cri.run_pod(sb1)
    st = cri.pod_status(pod1)
    if st.state != pb.SANDBOX_READY or st.runtime_handler != "vessel":
        raise Failed(f"pod1 {pod1}: state {st.state}, handler '{st.runtime_handler}', want READY and vessel")
    ip = st.network.ip
    if not ip.startswith("10.89.0."):
        raise Failed(f"pod1 {pod1}: address '{ip}', want one in 10.89.0.0/24")
    ok(f"RunPodSandbox (handler vessel): pod1 {pod1[:12]} READY at {ip}")

    web = cri.start_container(pod1, sb1, "web", image, [
        "sh", "-c", f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www"],
        pb.CONTAINER)
    client = cri.start_container(pod1, sb1, "client", image, [
        "sh", "-c",
        'for i in $(seq 150); do'
        ' page=$(printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | nc 127.0.0.1 80 | tail -n 1);'
        f' [ "$page" = {PAGE} ] && break; usleep 200000; done;'
        ' echo "client got: $page"; exec sleep 1000000'],
        pb.CONTAINER)
    for name, cid in (("web", web), ("client", client)):
        state = cri.container_status(cid).state
        if state != pb.CONTAINER_RUNNING:
            raise Failed(f"{name} {cid}: state {pb.ContainerState.Name(state)}, want CONTAINER_RUNNING")
    log = os.path.join(sb1.log_directory, "client/0.log")
    wait_for(f"'client got: {PAGE}' in {log}", lambda: f"client got: {PAGE}" in log_lines(log), timeout=180)
    ok(f"containers web and client RUNNING; client reached web on 127.0.0.1:80, its CRI log says 'client got: {PAGE}'")

    got = cri.exec_sync(web, ["sh", "-c", "echo exec-ok; exit 3"])
    if got.stdout != b"exec-ok\n" or got.exit_code != 3:
        raise Failed(f"ExecSync in web: stdout {got.stdout!r}, stderr {got.stderr!r}, exit {got.exit_code}; "
                     "want b'exec-ok\\n' and 3")
    ok("ExecSync in web: stdout 'exec-ok', exit code 3")

    # Separate PID namespaces: client sees its own sleep, web does not.
    wait_for("ps in client to list its 'sleep 1000000'", lambda: "sleep 1000000" in
             cri.exec_sync(client, ["ps", "-o", "args"]).stdout.decode().splitlines(), timeout=60)
    got = cri.exec_sync(web, ["ps", "-o", "args"])
    if "sleep 1000000" in got.stdout.decode().splitlines():
        raise Failed(f"pid CONTAINER: web sees client's sleep: {got.stdout.decode()!r}")
    ok("pod1 (pid CONTAINER): ps in client lists its 'sleep 1000000', ps in web does not")

    wait_for(f"the page from http://{ip}/index.html", lambda: subprocess.run(
        ["curl", "-s", "--max-time", "5", f"http://{ip}/index.html"],
        capture_output=True, text=True).stdout.strip() == PAGE, timeout=60)
    ok(f"the lab host got '{PAGE}' from http://{ip}/index.html")

    vms = vm_count()
    if vms != 1:
        raise Failed(f"{vms} processes run a microVM with pod1 running, want 1")
    ok("one microVM (one process with a vcpu0 thread) for pod1's pause, web and client")

    quits = cri.start_container(pod1, sb1, "quits", image, ["sh", "-c", "exit 5"], pb.CONTAINER)
    def exited():
        st = cri.container_status(quits)
        return st if st.state == pb.CONTAINER_EXITED else None
    st = wait_for("quits to exit", exited, timeout=120)
    if st.exit_code != 5 or st.finished_at == 0:
        raise Failed(f"quits: exit code {st.exit_code}, finished_at {st.finished_at}, reason '{st.reason}'; want 5")
    ok(f"a container that exits by itself: CONTAINER_EXITED, exit code 5 (reason '{st.reason}')")

    # Pod 2: one PID namespace for the pod; a container sees another's processes.
    sb2 = cri.sandbox_config("pod2", pb.POD)
    pod2 = cri.run_pod(sb2)
    cri.start_container(pod2, sb2, "sleeper", image, ["sleep", "1000"], pb.POD)
    lister = cri.start_container(pod2, sb2, "lister", image, ["sleep", "1000000"], pb.POD)
    def listed():
        procs = cri.exec_sync(lister, ["ps", "-o", "args"]).stdout.decode().splitlines()[1:]
        return procs if "sleep 1000" in procs else None
    procs = wait_for("ps in lister to list 'sleep 1000'", listed, timeout=60)
    ok(f"pod2 (pid POD): ps in lister lists sleeper's 'sleep 1000' among {procs}")
    vms = vm_count()
    if vms != 2:
        raise Failed(f"{vms} processes run a microVM with pod1 and pod2 running, want 2")
    ok("two pods, two microVMs")

    for pod in (pod1, pod2):
        cri.remove_pod(pod)
    os.unlink(os.path.join(cri.work, "pods"))
    ok("StopPodSandbox and RemovePodSandbox of pod1 and pod2")


def teardown(cri):
    path = os.path.join(cri.work, "pods")
    if not os.path.exists(path):
        return
    with open(path) as f:
        for pod in f.read().split():
            try:
                cri.remove_pod(pod)
            except Exception as e:  # best effort: the lab ends anyway
                print(f"cri: teardown of {pod}: {e}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--pause", required=True)
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("action", choices=["run", "teardown"])
    args = ap.parse_args()
    global OFFSET
    OFFSET = args.seconds
    sys.path.insert(0, args.gen)
    import grpc
    import api_pb2
    import api_pb2_grpc
    cri = Cri(grpc, api_pb2, api_pb2_grpc, args.socket, args.work)
    if args.action == "teardown":
        teardown(cri)
        return 0
    try:
        scenario(cri, args.image, args.pause)
    except Failed as e:
        print(f"cri: FAIL: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"cri: FAIL: CRI call: {e.code()}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
