#!/usr/bin/env python3
"""Operator scale bench: N FineTuneJobs applied at once -> time until each one's batch/v1 Job exists.

Runs the real `tuneops operator` (subprocess, standalone, one namespace) against the tests/cluster control
plane (etcd + kube-apiserver + kube-controller-manager + kwok). For each FineTuneJob: t0 = when its create
call returned, t1 = when a watch on Jobs saw `<name>-r1` ADDED. Reports p50/p99 of t1 - t0 and the total
(first create -> last Job). Baseline: kopf create/update/resume parent handlers ("causes"); compared with the
default filtered event handlers ("events"), same cluster, back to back; the table shows ratios.

    python bench/operator_bench.py                # 1000 jobs, causes (baseline) then events
    python bench/operator_bench.py -n 200 --parents events --workers 1 4
    TUNEOPS_KUBE_STATE=/tmp/tuneops-devcluster python bench/operator_bench.py   # reuse a running cluster
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster import devcluster  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_once(n: int, workers: int, template: dict, kubeconfig: str, parents: str) -> dict:
    import kubernetes

    api_client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    api_client.configuration.connection_pool_maxsize = 32
    core = kubernetes.client.CoreV1Api(api_client)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    batch = kubernetes.client.BatchV1Api(api_client)
    ns = f"bench-w{workers}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})

    env = {**os.environ, "KUBECONFIG": kubeconfig, "TUNEOPS_OPERATOR_WORKERS": str(workers),
           "TUNEOPS_PARENT_HANDLERS": parents,
           # Pods stay Running: the bench measures the operator, not kwok finishing 1000 pods.
           "TUNEOPS_TRAINING_POD_ANNOTATIONS": json.dumps({"kwok.tuneops.io/result": "hold"})}
    log = open(f"/tmp/operator-bench-{ns}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tuneops.cli", "operator", "--standalone", "-n", ns,
                             "--metrics-port", "0", "--liveness", "", "--log-format", "plain"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch_jobs():
        w = kubernetes.watch.Watch()
        for ev in w.stream(batch.list_namespaced_job, ns, timeout_seconds=1800):
            if ev["type"] == "ADDED":
                name = ev["object"].metadata.name
                seen.setdefault(name[: -len("-r1")], time.perf_counter())
                if len(seen) >= n:
                    w.stop()
                    break
        done.set()

    watcher = threading.Thread(target=watch_jobs, daemon=True)
    watcher.start()
    time.sleep(4)  # operator start-up (imports, kopf watches) is not part of the measurement
    created: dict[str, float] = {}

    def create(i: int):
        body = copy.deepcopy(template)
        body["metadata"] = {"name": f"j{i:04d}"}
        custom.create_namespaced_custom_object("tuneops.io", "v1alpha1", ns, "finetunejobs", body)
        created[f"j{i:04d}"] = time.perf_counter()

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    applied = time.perf_counter() - start
    finished = done.wait(timeout=1800)
    proc.terminate()
    proc.wait(30)
    log.close()
    if not finished:
        raise SystemExit(f"only {len(seen)}/{n} Jobs appeared (workers={workers}); see /tmp/operator-bench-{ns}.log")
    latencies = [seen[k] - created[k] for k in created]
    return {"parents": parents, "workers": workers, "n": n, "apply_s": applied,
            "p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 0.99),
            "total_s": max(seen.values()) - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="FineTuneJobs to apply (default 1000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[4], help="reconcile worker counts")
    parser.add_argument("--parents", nargs="+", default=["causes", "events"], choices=["causes", "events"],
                        help="parent handler styles (TUNEOPS_PARENT_HANDLERS); the first run is the baseline")
    args = parser.parse_args()

    reuse = os.environ.get("TUNEOPS_KUBE_STATE")
    cluster = devcluster.attach(reuse) if reuse else devcluster.start("/tmp/tuneops-bench-cluster", job_pods="hold")
    try:
        for path in sorted((REPO / "crds").glob("*.yaml")):
            subprocess.run([str(cluster.paths.kubectl), "--kubeconfig", str(cluster.kubeconfig), "apply",
                            "--server-side", "--force-conflicts", "-f", str(path)], text=True, check=True,
                           capture_output=True)
        subprocess.run([str(cluster.paths.kubectl), "--kubeconfig", str(cluster.kubeconfig), "wait",
                        "--for=condition=Established", "crd/finetunejobs.tuneops.io"], check=True,
                       capture_output=True)
        template = yaml.safe_load((REPO / "examples" / "smollm2-lora.yaml").read_text())
        rows = [run_once(args.n, w, template, str(cluster.kubeconfig), p) for p in args.parents for w in args.workers]
    finally:
        if not reuse:
            devcluster.stop(cluster)
    base = rows[0]
    print(f"\nOperator bench: {args.n} FineTuneJobs applied -> Job created "
          f"(baseline: parents={base['parents']}, workers={base['workers']})\n")
    print("| parent handlers | workers | jobs | apply s | p50 s | p99 s | total s | p50 ratio | p99 ratio | total ratio | jobs/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['parents']} | {r['workers']} | {r['n']} | {r['apply_s']:.1f} | {r['p50_s']:.2f} | {r['p99_s']:.2f} | "
              f"{r['total_s']:.1f} | {r['p50_s'] / base['p50_s']:.2f} | {r['p99_s'] / base['p99_s']:.2f} | "
              f"{r['total_s'] / base['total_s']:.2f} | {r['n'] / r['total_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
