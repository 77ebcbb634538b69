"""The Kubernetes manifests (k8s/) and the image (Dockerfile), checked
without a cluster or a Docker engine (issue 7).

  * every manifest parses, every object is named, every kustomization lists
    files that exist, and kustomize's rendering (a small renderer here,
    compared with `kubectl kustomize` where kubectl is installed) holds no
    reference that does not resolve: Service selectors and target ports,
    envFrom / configMapKeyRef / secretKeyRef, volumes, serviceName, probe
    ports, the PodDisruptionBudget's selector, the PersistentVolumes;
  * every kustomization under k8s/, as `kubectl kustomize` renders it, passes
    the schema check (tests/k8s/validate.mjs: Kubernetes' OpenAPI schemas
    from npm kubernetes-models, offline; wrong types, missing required
    fields, unknown fields), and a broken manifest is reported path by path;
  * pgfleet started with exactly the environment a pod of the Deployment (and
    of the sidecar example) would get, read from the ConfigMap and the Secret,
    serves the local three-pod service, every pod answering; the replication
    variant's ini routes writes to the primary and reads to the standbys, and
    its clone script really clones the primary;
  * the Dockerfile's build stage runs (meson, the same commands), its runtime
    packages exist and are exactly what `ldd` needs, the binary starts in a
    root holding nothing but those packages' files, as the non-root user, and
    the HEALTHCHECK command tells 200 from anything else.

Only what a test host must override is overridden, and each test says what:
where the pods are resolved (the fixture's DNS server) and where pgfleet
listens (a free port on 127.0.0.1 instead of 0.0.0.0:6432 and :9930).
"""

import copy
import glob
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading

import psycopg
import pytest
import yaml

import fixture as fx

K8S = os.path.join(fx.REPO, "k8s")
DOCKERFILE = os.path.join(fx.REPO, "Dockerfile")
NAMESPACE = "postgres"
KUSTOMIZATIONS = ["", "replication", "sidecar", "extra-pvs", "monitoring"]  # under k8s/
COMPONENTS = ["components/monitoring"]  # under k8s/, `kind: Component`
# kustomize leaves these without a namespace
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole",
                  "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# Where a test host must differ from a pod (see the module docstring).
HOST_OVERRIDES = ("PGFLEET_LISTEN_ADDR", "PGFLEET_LISTEN_PORT",
                  "PGFLEET_HTTP_LISTEN", "PGFLEET_DNS_SERVERS")
# A pod in a fleet (PGFLEET_PEERS) also gets its own address from the
# downward API: on the test host, one of the fixture's loopback addresses.
POD_IP_PLACEHOLDER = "10.244.0.7"
TEST_POD_IP = fx.NET_PREFIX + ".200"


# ---------------------------------------------------------------------------
# Reading the manifests: a renderer for the subset of kustomize used here
# (resources, namespace, strategic-merge patches).

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifest_files():
    return sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True))


def kustomization(dirpath):
    [k] = load_docs(os.path.join(dirpath, "kustomization.yaml"))
    return k


# The merge keys of the lists the patches here touch (Kubernetes' own
# patchMergeKey for each field); every other list is replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
              "env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def strategic_merge(base, patch):
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif k in MERGE_KEYS and isinstance(v, list) and isinstance(out.get(k), list):
            key = MERGE_KEYS[k]
            merged = out[k]
            for item in v:
                for i, old in enumerate(merged):
                    if old.get(key) == item.get(key):
                        merged[i] = strategic_merge(old, item)
                        break
                else:
                    merged.append(copy.deepcopy(item))
        elif k in out:
            out[k] = strategic_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_env_file(path):
    """A kustomize `envs` file: KEY=VALUE lines, # comments, blank lines."""
    data = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            k, sep, v = line.partition("=")
            assert sep, "%s: not KEY=VALUE: %r" % (path, line)
            data[k.strip()] = v
    return data


def kustomize_hash(kind, data):
    """kustomize's name suffix: sha256 of the JSON of kind, an empty name and
    the data (Go's json.Marshal: sorted keys, <>& escaped), its first 10 hex
    digits with 0, 1, 3, a, e spelled g, h, k, m, t."""
    enc = json.dumps({"kind": kind, "name": "", "data": data}, sort_keys=True,
                     separators=(",", ":"), ensure_ascii=False)
    enc = enc.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(enc.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def generate_configmaps(d, k):
    """The configMapGenerator's ConfigMaps, and {name: hashed name}."""
    objs, renamed = [], {}
    for g in k.get("configMapGenerator", []):
        data = {}
        for e in g.get("envs", []):
            data.update(read_env_file(os.path.join(d, e)))
        for lit in g.get("literals", []):
            key, _, v = lit.partition("=")
            data[key] = v
        for fspec in g.get("files", []):
            key, _, path = fspec.rpartition("=")
            with open(os.path.join(d, path)) as f:
                data[key or os.path.basename(path)] = f.read()
        opts = dict(k.get("generatorOptions", {}), **g.get("options", {}))
        meta = {"name": g["name"]}
        if opts.get("labels"):
            meta["labels"] = dict(opts["labels"])
        if opts.get("annotations"):
            meta["annotations"] = dict(opts["annotations"])
        if not opts.get("disableNameSuffixHash"):
            meta["name"] = "%s-%s" % (g["name"], kustomize_hash("ConfigMap", data))
            renamed[g["name"]] = meta["name"]
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return objs, renamed


def rename_configmap_refs(objs, renamed):
    """What kustomize's name reference transformer does for ConfigMaps in a
    pod template: envFrom, configMapKeyRef, volumes (projected too)."""
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(o)
        refs = []
        for c in all_containers(spec):
            refs += [ef["configMapRef"] for ef in c.get("envFrom", []) if "configMapRef" in ef]
            refs += [e["valueFrom"]["configMapKeyRef"] for e in c.get("env", [])
                     if "configMapKeyRef" in e.get("valueFrom", {})]
        for v in spec.get("volumes", []):
            if "configMap" in v:
                refs.append(v["configMap"])
            for src in v.get("projected", {}).get("sources", []):
                if "configMap" in src:
                    refs.append(src["configMap"])
        for ref in refs:
            ref["name"] = renamed.get(ref["name"], ref["name"])


def render(rel):
    """The objects `kubectl kustomize k8s/<rel>` produces."""
    d = os.path.join(K8S, rel)
    k = kustomization(d)
    objs = []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(p):
            objs += render(os.path.relpath(p, K8S))
        else:
            objs += load_docs(p)
    generated, renamed = generate_configmaps(d, k)
    objs += generated
    rename_configmap_refs(objs, renamed)
    for comp in k.get("components", []):
        cd = os.path.normpath(os.path.join(d, comp))
        ck = kustomization(cd)
        assert ck["kind"] == "Component", cd
        for r in ck.get("resources", []):
            objs += load_docs(os.path.join(cd, r))
        cgen, crenamed = generate_configmaps(cd, ck)
        objs += cgen
        rename_configmap_refs(objs, crenamed)
        objs = apply_patches(cd, ck, objs)
    objs = apply_patches(d, k, objs)
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    return objs


def apply_patches(d, k, objs):
    objs = list(objs)
    for patch in k.get("patches", []):
        for pdoc in load_docs(os.path.join(d, patch["path"])):
            targets = [o for o in objs if o["kind"] == pdoc["kind"]
                       and o["metadata"]["name"] == pdoc["metadata"]["name"]]
            assert len(targets) == 1, "patch %s matches %d objects" % (
                patch["path"], len(targets))
            i = objs.index(targets[0])
            objs[i] = strategic_merge(objs[i], pdoc)
    return objs


def find(objs, kind, name):
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, "%s/%s: %d objects" % (kind, name, len(hits))
    return hits[0]


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def all_containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def secret_data(secret):
    import base64
    data = {k: base64.b64decode(v).decode() for k, v in
            (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def container_env(objs, kind, name, container):
    """The environment Kubernetes gives `container`: envFrom first, then env
    (which wins), values read from the ConfigMaps and Secrets in `objs`."""
    spec = pod_spec(find(objs, kind, name))
    [c] = [c for c in all_containers(spec) if c["name"] == container]
    env = {}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            env.update(find(objs, "ConfigMap", ef["configMapRef"]["name"])["data"])
        else:
            env.update(secret_data(find(objs, "Secret", ef["secretRef"]["name"])))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        vf = e["valueFrom"]
        if "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            env[e["name"]] = find(objs, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            env[e["name"]] = secret_data(find(objs, "Secret", ref["name"]))[ref["key"]]
        elif "fieldRef" in vf and vf["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[e["name"]] = NAMESPACE
        elif "fieldRef" in vf and vf["fieldRef"]["fieldPath"] == "status.podIP":
            env[e["name"]] = POD_IP_PLACEHOLDER
    return {k: str(v) for k, v in env.items()}


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def config_default(name):
    """A setting's default, from the one table in include/config.h."""
    with open(os.path.join(fx.REPO, "include", "config.h")) as f:
        m = re.search(r"X\(%s,\s*\w+,\s*\"([^\"]*)\"\)" % name, f.read())
    assert m, name
    return m.group(1)


# ---------------------------------------------------------------------------
# Every file, every object

@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: os.path.relpath(p, K8S))
def test_manifest_parses_and_names_every_object(path):
    docs = load_docs(path)
    assert docs, "empty manifest"
    for d in docs:
        assert isinstance(d, dict), "not a mapping: %r" % (d,)
        assert d.get("apiVersion") and d.get("kind"), d
        if d["kind"] in ("Kustomization", "Component"):
            assert os.path.basename(path) == "kustomization.yaml"
            continue
        assert d.get("metadata", {}).get("name"), "%s without metadata.name" % d["kind"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", d["metadata"]["name"])


def test_kustomizations_list_files_that_exist_and_nothing_is_left_out():
    used = set()
    for rel in KUSTOMIZATIONS:
        d = os.path.join(K8S, rel)
        k = kustomization(d)
        used.add(os.path.join(d, "kustomization.yaml"))
        for r in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
            p = os.path.normpath(os.path.join(d, r))
            assert os.path.exists(p), "k8s/%s/kustomization.yaml lists missing %s" % (rel, r)
            if os.path.isdir(p):
                assert os.path.isfile(os.path.join(p, "kustomization.yaml")), p
                assert os.path.relpath(p, K8S) in KUSTOMIZATIONS + ["postgres", "pgfleet"]
            else:
                used.add(p)
        for c in k.get("components", []):
            assert os.path.relpath(os.path.normpath(os.path.join(d, c)), K8S) in COMPONENTS, c
    for sub in ["postgres", "pgfleet"] + COMPONENTS:
        d = os.path.join(K8S, sub)
        k = kustomization(d)
        used.add(os.path.join(d, "kustomization.yaml"))
        used.update(os.path.join(d, r) for r in k.get("resources", []))
        used.update(os.path.join(d, p["path"]) for p in k.get("patches", []))
        for g in k.get("configMapGenerator", []):
            for f in g.get("envs", []) + [x.rpartition("=")[2] for x in g.get("files", [])]:
                assert os.path.isfile(os.path.join(d, f)), "k8s/%s lists missing %s" % (sub, f)
    orphans = [os.path.relpath(p, K8S) for p in manifest_files() if p not in used]
    assert not orphans, "manifests no kustomization applies: %s" % orphans


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_the_same_objects(rel):
    p = subprocess.run(["kubectl", "kustomize", os.path.join(K8S, rel)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr

    def key(o):
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
    theirs = sorted(load_docs_text(p.stdout), key=key)
    ours = sorted(render(rel), key=key)
    assert [key(o) for o in ours] == [key(o) for o in theirs]
    for a, b in zip(ours, theirs):
        assert unordered(a) == unordered(b), "%s/%s differs from kubectl kustomize" % key(a)[::2]


def load_docs_text(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def unordered(o, field=None):
    """The order of a list merged by key is not meaningful (kustomize puts a
    patch's new items first)."""
    if isinstance(o, dict):
        return {k: unordered(v, k) for k, v in o.items()}
    if isinstance(o, list):
        items = [unordered(v) for v in o]
        if field in MERGE_KEYS:
            items.sort(key=lambda i: str(i.get(MERGE_KEYS[field])))
        return items
    return o


# ---------------------------------------------------------------------------
# References

@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_every_reference_resolves(rel):
    objs = render(rel)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), "duplicate objects"
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]["name"]
    if any(o["kind"] not in CLUSTER_SCOPED for o in objs):
        find(objs, "Namespace", NAMESPACE)
    workloads = [o for o in objs if o["kind"] in WORKLOADS]
    for w in workloads:
        name = "%s/%s" % (w["kind"], w["metadata"]["name"])
        tmpl_labels = w["spec"]["template"]["metadata"]["labels"]
        assert labels_match(w["spec"]["selector"]["matchLabels"], tmpl_labels), name
        spec = pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "configMap" in v:
                cm = find(objs, "ConfigMap", v["configMap"]["name"])
                for item in v["configMap"].get("items", []):
                    assert item["key"] in cm["data"], (name, item)
            if "secret" in v:
                find(objs, "Secret", v["secret"]["secretName"])
        for c in all_containers(spec):
            where = "%s container %s" % (name, c["name"])
            assert c.get("image"), where
            ports = {p["containerPort"] for p in c.get("ports", [])}
            port_names = {p["name"] for p in c.get("ports", []) if "name" in p}
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef") or ef.get("secretRef")
                find(objs, "ConfigMap" if "configMapRef" in ef else "Secret", ref["name"])
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "configMapKeyRef" in vf:
                    ref = vf["configMapKeyRef"]
                    assert ref["key"] in find(objs, "ConfigMap", ref["name"])["data"], where
                if "secretKeyRef" in vf:
                    ref = vf["secretKeyRef"]
                    assert ref["key"] in secret_data(find(objs, "Secret", ref["name"])), where
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes or m["name"] in claims, (where, m["name"])
                if "subPath" in m and "configMap" in volumes.get(m["name"], {}):
                    cm = find(objs, "ConfigMap", volumes[m["name"]]["configMap"]["name"])
                    assert m["subPath"] in cm["data"], (where, m["subPath"])
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                action = c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket")
                if action:
                    port = action["port"]
                    assert (port in port_names if isinstance(port, str) else port in ports), \
                        "%s %s port %r is not a container port" % (where, probe, port)
    for svc in (o for o in objs if o["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        pods = [w for w in workloads
                if labels_match(sel, w["spec"]["template"]["metadata"]["labels"])]
        assert pods, "Service %s selects no pods" % svc["metadata"]["name"]
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            names = {cp.get("name") for w in pods for c in pod_spec(w)["containers"]
                     for cp in c.get("ports", [])}
            numbers = {cp["containerPort"] for w in pods for c in pod_spec(w)["containers"]
                       for cp in c.get("ports", [])}
            assert target in (names if isinstance(target, str) else numbers), \
                "Service %s targetPort %r" % (svc["metadata"]["name"], target)
    for sfs in (o for o in objs if o["kind"] == "StatefulSet"):
        svc = find(objs, "Service", sfs["spec"]["serviceName"])
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is False
        assert labels_match(svc["spec"]["selector"],
                            sfs["spec"]["template"]["metadata"]["labels"])
        for vct in sfs["spec"]["volumeClaimTemplates"]:
            cls = vct["spec"]["storageClassName"]
            pvs = [o for o in render("") + render("extra-pvs")
                   if o["kind"] == "PersistentVolume" and o["spec"]["storageClassName"] == cls]
            assert len([pv for pv in pvs if pv in objs]) >= sfs["spec"]["replicas"]
            # enough for the README's scale to 5 with k8s/extra-pvs
            assert len({pv["metadata"]["name"] for pv in pvs}) >= 5
    for pdb in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        hits = [w for w in workloads if w["kind"] == "Deployment"
                and labels_match(sel, w["spec"]["template"]["metadata"]["labels"])]
        assert hits, "PodDisruptionBudget %s selects no Deployment" % pdb["metadata"]["name"]
        assert pdb["spec"]["minAvailable"] < hits[0]["spec"]["replicas"], \
            "a PDB as large as the Deployment blocks every node drain"


# ---------------------------------------------------------------------------
# What the issue asks of the objects

def test_the_seeds_objects():
    objs = render("")
    for i in range(3):
        pv = find(objs, "PersistentVolume", "pv-%d" % i)
        assert "namespace" not in pv["metadata"]
    svc = find(objs, "Service", "postgresql-svc")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is False
    assert "POSTGRES_PASSWORD" in secret_data(find(objs, "Secret", "postgresql-secret"))
    sfs = find(objs, "StatefulSet", "postgresql-sfs")
    assert sfs["spec"]["replicas"] == 3
    assert sfs["spec"]["volumeClaimTemplates"]
    # a pod's A record appears only once it accepts connections
    assert pod_spec(sfs)["containers"][0]["readinessProbe"]


def _shutdown_budget(spec, container, env):
    pre = container["lifecycle"]["preStop"]
    sleep = float(pre["sleep"]["seconds"]) if "sleep" in pre else \
        float(pre["exec"]["command"][-1]) if pre["exec"]["command"][0] == "sleep" else 0
    timeout = float(env.get("PGFLEET_SHUTDOWN_TIMEOUT", config_default("shutdown_timeout")))
    return sleep, timeout, spec["terminationGracePeriodSeconds"]


def test_pgfleet_deployment():
    objs = render("")
    dep = find(objs, "Deployment", "pgfleet")
    assert dep["spec"]["replicas"] == 2
    spec = pod_spec(dep)
    [c] = spec["containers"]
    env = container_env(objs, "Deployment", "pgfleet", "pgfleet")
    assert env["DB_HOST"] == "postgresql-svc.postgres.svc.cluster.local"
    assert env["DB_USER"] and env["DB_PASSWORD"]
    assert [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "DB_PASSWORD"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    http_port = int(config_default("http_listen").rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == http_port and ports["postgres"] == int(config_default("listen_port"))
    assert "PGFLEET_HTTP_LISTEN" not in env and "LISTEN_PORT" not in env
    sleep, timeout, grace = _shutdown_budget(spec, c, env)
    assert sleep > 0 and grace > sleep + timeout, \
        "SIGTERM's drain (%ss) after preStop (%ss) must end within %ss" % (timeout, sleep, grace)
    for kind in ("requests", "limits"):
        assert c["resources"][kind]["cpu"] and c["resources"][kind]["memory"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    find(objs, "PodDisruptionBudget", "pgfleet")
    svc = find(objs, "Service", "pgfleet")
    assert svc["spec"].get("clusterIP") != "None"


def test_pgfleet_pods_are_a_fleet_of_peers():
    """Issue 20: the pods find each other through a headless Service that
    lists them before they are ready, know their own address (downward
    API), and sign peer messages with a secret from a Secret."""
    objs = render("")
    dep = find(objs, "Deployment", "pgfleet")
    [c] = pod_spec(dep)["containers"]
    env = container_env(objs, "Deployment", "pgfleet", "pgfleet")
    peers = find(objs, "Service", "pgfleet-peers")
    assert env["PGFLEET_PEERS"] == "pgfleet-peers.%s.svc.cluster.local" % NAMESPACE
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert labels_match(peers["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
    peer_port = int(config_default("peer_port"))
    [port] = peers["spec"]["ports"]
    assert port["protocol"] == "UDP" and port["port"] == peer_port
    [cport] = [p for p in c["ports"] if p["name"] == port["targetPort"]]
    assert cport["containerPort"] == peer_port and cport["protocol"] == "UDP"
    assert "PGFLEET_PEER_PORT" not in env
    [pod_ip] = [e for e in c["env"] if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    [secret] = [e for e in c["env"] if e["name"] == "PGFLEET_PEER_SECRET"]
    ref = secret["valueFrom"]["secretKeyRef"]
    assert ref["name"] != "postgresql-secret"  # PostgreSQL's password stays PostgreSQL's
    assert len(env["PGFLEET_PEER_SECRET"]) >= 16
    # Peer messages only from the other pgfleet pods.
    np = find(objs, "NetworkPolicy", "pgfleet")
    rules = [r for r in np["spec"]["ingress"]
             if any(p.get("protocol") == "UDP" and p["port"] == peer_port for p in r["ports"])]
    assert len(rules) == 1
    assert [f["podSelector"]["matchLabels"] for f in rules[0]["from"]] == \
        [dep["spec"]["template"]["metadata"]["labels"]]


def test_sidecar_is_in_the_application_pod_on_localhost():
    objs = render("sidecar")
    [app] = [o for o in objs if o["kind"] == "Deployment"]
    spec = pod_spec(app)
    [side] = [c for c in all_containers(spec) if c["image"].startswith("pgfleet")]
    assert side.get("restartPolicy") == "Always" or side in spec["containers"]
    env = container_env(objs, "Deployment", app["metadata"]["name"], side["name"])
    assert env["PGFLEET_LISTEN_ADDR"] == "127.0.0.1"
    assert "127.0.0.1 -p 6432" in " ".join(spec["containers"][0]["command"])
    assert spec["terminationGracePeriodSeconds"] > float(env["PGFLEET_SHUTDOWN_TIMEOUT"])
    assert side["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert side["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_defaults_suit_kubernetes_dns_without_tuning():
    """CoreDNS answers a headless service with a 5 s TTL and only ready pods:
    pgfleet must follow a scale-up, a scale-down and a pod that comes back
    within seconds with no DNS setting in the ConfigMap."""
    for rel in ("", "sidecar"):
        objs = render(rel)
        for cm in (o for o in objs if o["kind"] == "ConfigMap"):
            assert not [k for k in (cm.get("data") or {}) if k.startswith("PGFLEET_DNS")], \
                "ConfigMap %s tunes DNS" % cm["metadata"]["name"]
    assert float(config_default("dns_max_ttl")) <= 30
    assert float(config_default("dns_nxdomain_ttl")) <= 30
    assert config_default("dns_servers") == ""  # the pod's resolv.conf
    assert float(config_default("health_check_period")) <= 10
    assert config_default("http_listen").endswith(":9930")


# ---------------------------------------------------------------------------
# pgfleet with the pod's environment, against the local service

def start_as_pod(pgfleet, pod_env, args=()):
    """pgfleet with the pod's environment, but listening on free ports of
    127.0.0.1 and resolving through the fixture's DNS server: the only
    variables a test host must change (HOST_OVERRIDES)."""
    port, http = fx.free_port(), fx.free_port()
    settings = {"listen_addr": "127.0.0.1", "listen_port": port,
                "http_listen": "127.0.0.1:%d" % http, "dns_servers": fx.DNS_ADDR}
    overrides = {"PGFLEET_" + k.upper(): str(v) for k, v in settings.items()}
    assert set(overrides) == set(HOST_OVERRIDES)
    if "POD_IP" in pod_env:
        overrides["POD_IP"] = TEST_POD_IP
    fleet = pgfleet(config_file=False, users={}, settings=settings,
                    env=dict(pod_env, **overrides), args=args)
    fleet.http_port = http
    return fleet


def served_by(fleet, env, dbname, n=30):
    """Server addresses that answered n one-statement transactions, each on
    its own connection, as DB_USER with the Secret's password."""
    seen = []
    for _ in range(n):
        with psycopg.connect(host=fleet.host, port=fleet.port, dbname=dbname,
                             user=env["DB_USER"], password=env["DB_PASSWORD"],
                             connect_timeout=10, autocommit=True) as conn:
            conn.prepare_threshold = None
            seen.append(conn.execute(
                "SELECT host(inet_server_addr()), pg_is_in_recovery()").fetchone())
    return seen


def warm_up(fleet, env, service):
    """The pod's wildcard [databases] entry makes a worker's app pool at its
    first login there: log in on every worker, then wait until every pod has
    passed its first health check in each, before counting who serves."""
    for w in range(fleet.workers):
        fleet.connect_on_worker(w, user=env["DB_USER"], password=env["DB_PASSWORD"],
                                dbname=fx.APP_DB).close()
    assert fleet.wait_all_up(service.addrs, fx.APP_DB), fleet.log_tail()


def check_as_pod(env, args=()):
    """pgfleet --check with the pod's environment, untouched."""
    return subprocess.run([fx.Pgfleet().binary, "--check"] + list(args),
                          env=dict(env, PATH=os.environ.get("PATH", "/usr/bin")),
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("variant", ["deployment", "sidecar"])
def test_pod_environment_serves_every_pod(service, pgfleet, variant):
    rel, kind, name, container = {
        "deployment": ("", "Deployment", "pgfleet", "pgfleet"),
        "sidecar": ("sidecar", "Deployment", "app-with-pgfleet", "pgfleet"),
    }[variant]
    env = container_env(render(rel), kind, name, container)
    assert env["DB_HOST"] == fx.SVC_NAME
    p = check_as_pod(env)
    assert p.returncode == 0, p.stdout + p.stderr
    fleet = start_as_pod(pgfleet, env)
    warm_up(fleet, env, service)
    rows = served_by(fleet, env, fx.APP_DB)
    assert {addr for addr, _ in rows} == set(service.addrs), rows
    if variant == "deployment":
        if not os.path.exists(os.path.join(fx.REPO, "src", "http.c")):
            pytest.skip("no HTTP endpoint in this tree yet (/healthz, /readyz)")
        assert fleet.http_get("/healthz")[0] == 200
        assert fleet.http_get("/readyz")[0] == 200
        # the image's HEALTHCHECK, against the real endpoint
        hc = subprocess.run(healthcheck_argv(), capture_output=True, text=True, timeout=10,
                            env={"PATH": "/usr/bin:/bin",
                                 "PGFLEET_HTTP_LISTEN": "127.0.0.1:%d" % fleet.http_port})
        assert hc.returncode == 0, hc.stdout + hc.stderr


def test_admin_console_shows_every_pod(service, pgfleet):
    """The README's `kubectl run ... psql -U postgres pgfleet -c 'SHOW REPLICAS'`."""
    if not os.path.exists(os.path.join(fx.REPO, "src", "admin.c")):
        pytest.skip("no admin console in this tree yet")
    env = container_env(render(""), "Deployment", "pgfleet", "pgfleet")
    # A fleet of one: the peers' name answers with this pod alone.
    service.set_name(env["PGFLEET_PEERS"], [TEST_POD_IP])
    fleet = start_as_pod(pgfleet, env)
    warm_up(fleet, env, service)
    served_by(fleet, env, fx.APP_DB, n=6)
    with psycopg.connect(host=fleet.host, port=fleet.port, dbname="pgfleet",
                         user=env["ADMIN_USERS"].split(",")[0].strip(),
                         password=env["DB_PASSWORD"], connect_timeout=10,
                         autocommit=True) as conn:
        cur = conn.execute("SHOW REPLICAS")
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        cur = conn.execute("SHOW SERVERS")
        server_cols = [d.name for d in cur.description]
        cur = conn.execute("SHOW PEERS")
        peer_cols = [d.name for d in cur.description]
        peer_rows = [dict(zip(peer_cols, r)) for r in cur.fetchall()]
    assert [(r["host"], r["self"], r["state"]) for r in peer_rows] == \
        [(TEST_POD_IP, "yes", "live")], peer_rows
    assert {r["addr"] for r in rows} == set(service.addrs), rows
    assert all(r["state"] == "up" for r in rows), rows
    assert server_cols[:5] == ["type", "user", "database", "replication", "state"]
    assert {"replica", "role"} <= set(server_cols)


# ---------------------------------------------------------------------------
# The replication variant

def test_replication_variant_routes_by_role(replicated, pgfleet):
    objs = render("replication")
    env = container_env(objs, "Deployment", "pgfleet", "pgfleet")
    [c] = pod_spec(find(objs, "Deployment", "pgfleet"))["containers"]
    [mount] = c["volumeMounts"]
    [vol] = [v for v in pod_spec(find(objs, "Deployment", "pgfleet"))["volumes"]
             if v["name"] == mount["name"]]
    files = find(objs, "ConfigMap", vol["configMap"]["name"])["data"]
    workdir = tempfile.mkdtemp(prefix="k8s-ini-", dir=fx.StateDir().path)
    try:
        args = []
        for a in c["args"]:  # the mounted file, at a local path
            assert a.startswith(mount["mountPath"] + "/")
            local = os.path.join(workdir, os.path.basename(a))
            with open(local, "w") as f:
                f.write(files[os.path.basename(a)])
            args.append(local)
        p = check_as_pod(env, args)
        assert p.returncode == 0, p.stdout + p.stderr
        fleet = start_as_pod(pgfleet, env, args=args)
        primary = replicated.pod(0).addr
        standbys = {replicated.pod(i).addr for i in (1, 2)}
        rw = served_by(fleet, env, "postgres", n=6)
        assert set(rw) == {(primary, False)}, rw
        other = served_by(fleet, env, fx.APP_DB, n=3)
        assert set(other) == {(primary, False)}, other
        ro = served_by(fleet, env, "postgres_ro", n=12)
        assert {a for a, _ in ro} == standbys and all(r for _, r in ro), ro
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_clone_script_makes_a_standby_of_pod_0(replicated):
    """The init container's script, run for real against the primary: the
    pod name's ordinal decides, pg_basebackup clones, the clone is a standby
    named after its pod.  libpq's PGHOSTADDR stands in for cluster DNS."""
    script = find(render("replication"), "ConfigMap",
                  "postgresql-replication")["data"]["clone-from-primary.sh"]
    work = tempfile.mkdtemp(prefix="k8s-clone-", dir=fx.StateDir().path)
    os.chmod(work, 0o755)
    try:
        path = os.path.join(work, "clone.sh")
        with open(path, "w") as f:
            f.write(script)
        pgdata = os.path.join(work, "data", "pgdata")
        os.makedirs(os.path.dirname(pgdata))
        env = {"PATH": fx.PG_BIN + ":/usr/sbin:/usr/bin:/sbin:/bin", "PGDATA": pgdata,
               "POD_NAMESPACE": NAMESPACE, "POSTGRES_PASSWORD": fx.SUPERUSER_PASSWORD,
               "PGHOSTADDR": replicated.pod(0).addr, "PGCONNECT_TIMEOUT": "5"}
        p = subprocess.run(["bash", path], env=dict(env, HOSTNAME="postgresql-sfs-0"),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and not os.path.exists(pgdata), p.stdout + p.stderr
        p = subprocess.run(["bash", path], env=dict(env, HOSTNAME="postgresql-sfs-1"),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert os.path.isfile(os.path.join(pgdata, "standby.signal"))
        assert os.path.isfile(os.path.join(pgdata, "PG_VERSION"))
        assert not os.path.exists(pgdata + ".clone")
        with open(os.path.join(pgdata, "postgresql.auto.conf")) as f:
            auto = f.read()
        last = [l for l in auto.splitlines() if l.startswith("primary_conninfo")][-1]
        assert "host=postgresql-sfs-0.postgresql-svc.postgres.svc.cluster.local" in last
        assert "application_name=postgresql-sfs-1" in last
        assert os.stat(pgdata).st_mode & 0o777 == 0o700
        # a restarted pod keeps its data directory
        p = subprocess.run(["bash", path], env=dict(env, HOSTNAME="postgresql-sfs-1"),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and "data directory present" in p.stdout, p.stdout
        # a data directory that is not a standby's is never started as one
        os.unlink(os.path.join(pgdata, "standby.signal"))
        p = subprocess.run(["bash", path], env=dict(env, HOSTNAME="postgresql-sfs-1"),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "second primary" in p.stderr, p.stdout + p.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------
# The Dockerfile

def dockerfile_instructions():
    """[(stage_index, INSTRUCTION, argument text)], continuation lines joined."""
    out, stage, buf = [], -1, ""
    with open(DOCKERFILE) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            instr, _, arg = buf.strip().partition(" ")
            instr = instr.upper()
            if instr == "FROM":
                stage += 1
            out.append((stage, instr, arg.strip()))
            buf = ""
    return out


def stage_instructions(stage):
    return [(i, a) for s, i, a in dockerfile_instructions() if s == stage]


def apt_packages(run_arg):
    m = re.search(r"apt-get install ([^&]*)", run_arg)
    return [w for w in m.group(1).split() if not w.startswith("-")] if m else []


def stage_packages(stage):
    return [p for i, a in stage_instructions(stage) if i == "RUN" for p in apt_packages(a)]


def test_dockerfile_shape():
    froms = [a for _, i, a in dockerfile_instructions() if i == "FROM"]
    assert froms == ["debian:bookworm AS build", "debian:bookworm-slim"]
    final = stage_instructions(1)
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    uid = users[-1].split(":")[0]
    assert any(i == "RUN" and "useradd" in a and "--uid %s" % uid in a for i, a in final)
    assert [a for i, a in final if i == "EXPOSE"] == ["6432 9930"]
    [entry] = [json.loads(a) for i, a in final if i == "ENTRYPOINT"]
    assert entry == ["/usr/local/bin/pgfleet"]
    assert not [a for i, a in final if i == "CMD"], "a CMD file argument would hide the environment"
    [copy_bin] = [a for i, a in final if i == "COPY" and a.startswith("--from=build")]
    assert copy_bin.split()[-1] == entry[0]
    health = [a for i, a in final if i == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    assert config_default("http_listen") in health[0]
    assert set(stage_packages(0)) >= {"meson", "libevent-dev", "libc-ares-dev",
                                      "libssl-dev", "libpq-dev", "liburing-dev"}


def test_pgfleet_containers_run_read_only_as_the_images_user():
    """Every pgfleet container in every variant: the Dockerfile's non-root
    uid, a read-only root file system, no capabilities.  pgfleet writes
    nothing at run time (no unix socket by default, no pid file, logs on
    stderr), so no emptyDir is needed; tests/integration/test_image.py runs
    the image that way (podman --read-only, no tmpfs)."""
    [user] = [a for i, a in stage_instructions(1) if i == "USER"]
    uid = int(user.split(":")[0])
    for rel in KUSTOMIZATIONS:
        for w in (o for o in render(rel) if o["kind"] in WORKLOADS):
            spec = pod_spec(w)
            for c in all_containers(spec):
                if not c["image"].startswith("pgfleet"):
                    continue
                where = "k8s/%s %s container %s" % (rel, w["metadata"]["name"], c["name"])
                sc = dict(spec.get("securityContext") or {}, **(c.get("securityContext") or {}))
                assert sc.get("runAsNonRoot") is True, where
                assert sc.get("runAsUser", uid) == uid, where
                assert sc.get("readOnlyRootFilesystem") is True, where
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
                env = container_env(render(rel), w["kind"], w["metadata"]["name"], c["name"])
                for key in ("PGFLEET_UNIX_SOCKET_DIR", "PGFLEET_PIDFILE", "PGFLEET_LOGFILE"):
                    assert not env.get(key), "%s: %s needs a writable volume" % (where, key)


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="not Debian")
@pytest.mark.parametrize("stage", [0, 1], ids=["build", "runtime"])
def test_dockerfile_packages_exist_in_apt(stage):
    pkgs = stage_packages(stage)
    assert pkgs
    p = subprocess.run(["apt-get", "-s", "install", "--no-install-recommends"] + pkgs,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, LC_ALL="C"))
    assert p.returncode == 0, p.stdout + p.stderr
    q = subprocess.run(["apt-cache", "show", "--no-all-versions"] + pkgs,
                       capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    shown = re.findall(r"^Package: (\S+)$", q.stdout, re.M)
    assert sorted(shown) == sorted(pkgs), shown


# -- the build stage, run for real -----------------------------------------

def _dockerignore():
    try:
        with open(os.path.join(fx.REPO, ".dockerignore")) as f:
            return [l.strip() for l in f if l.strip() and not l.startswith("#")]
    except FileNotFoundError:
        return []


def _ignored(rel, patterns):
    import fnmatch
    for pat in patterns:
        pat = pat[3:] if pat.startswith("**/") else pat
        parts = rel.split(os.sep)
        if any(fnmatch.fnmatch(part, pat) for part in parts) or fnmatch.fnmatch(rel, pat):
            return True
    return False


@pytest.fixture(scope="module")
def built():
    """The build stage's COPY and RUN meson steps, with /src and /build
    moved under a temporary directory: yields the release binary."""
    root = tempfile.mkdtemp(prefix="pgfleet-docker-build-")
    try:
        yield _build_stage(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _build_stage(root):
    workdir = None
    ignore = _dockerignore()
    for instr, arg in stage_instructions(0):
        if instr == "WORKDIR":
            workdir = root + arg
            os.makedirs(workdir, exist_ok=True)
        elif instr == "COPY":
            *srcs, dest = arg.split()
            dest = os.path.normpath(os.path.join(workdir, dest))
            for s in srcs:
                src = os.path.join(fx.REPO, s)
                if os.path.isdir(src):
                    shutil.copytree(src, dest, ignore=lambda d, names: [
                        n for n in names
                        if _ignored(os.path.relpath(os.path.join(d, n), fx.REPO), ignore)])
                else:
                    os.makedirs(dest, exist_ok=True)
                    shutil.copy2(src, dest)
        elif instr == "RUN" and "apt-get" not in arg:
            cmd = re.sub(r"(?<![\w/])/build\b", root + "/build", arg)
            p = subprocess.run(["sh", "-c", cmd], cwd=workdir, capture_output=True,
                               text=True, timeout=300)
            assert p.returncode == 0, "RUN %s\n%s%s" % (arg, p.stdout[-3000:], p.stderr[-3000:])
    binary = os.path.join(root, "build", "pgfleet")
    assert os.access(binary, os.X_OK)
    return binary


def _dpkg_owners(paths):
    """path -> the Debian package that ships it (merged /usr: a library may
    be listed under /lib or /usr/lib)."""
    cands = {}
    for path in paths:
        for c in (path, os.path.realpath(path)):
            cands.setdefault(c, path)
            cands.setdefault(c[4:] if c.startswith("/usr/") else "/usr" + c, path)
    p = subprocess.run(["dpkg-query", "-S"] + sorted(cands), capture_output=True, text=True)
    owners = {}
    for line in p.stdout.splitlines():
        pkg, _, f = line.partition(": ")
        if f in cands:
            owners.setdefault(cands[f], pkg.split(",")[0].split(":")[0].strip())
    missing = set(paths) - set(owners)
    assert not missing, "no Debian package ships %s" % sorted(missing)
    return owners


def _installed():
    """name -> (essential/required, [dependency alternatives], provides)"""
    fmt = "${Package}\t${Essential}\t${Priority}\t${Depends}\t${Pre-Depends}\t${Provides}\t${db:Status-Abbrev}\n"
    p = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True,
                       check=True)
    pkgs, provides = {}, {}
    for line in p.stdout.splitlines():
        name, ess, prio, dep, pre, prov, status = line.split("\t")
        if not status.startswith("ii"):
            continue
        alts = [[re.sub(r"[:\s(].*", "", a.strip()) for a in group.split("|")]
                for group in (dep + ("," if dep and pre else "") + pre).split(",") if group.strip()]
        pkgs[name] = (ess == "yes" or prio == "required", alts)
        for v in prov.split(","):
            if v.strip():
                provides.setdefault(re.sub(r"[\s(].*", "", v.strip()), []).append(name)
    return pkgs, provides


def _closure(roots, pkgs, provides):
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        for alts in pkgs.get(n, (False, []))[1]:
            for a in alts:  # the first alternative that is installed
                real = [a] if a in pkgs else provides.get(a, [])
                if real:
                    todo += real[:1]
                    break
    return seen


def _ldd(binary):
    p = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True)
    libs = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*(\S+)(?: => (\S+))? \(0x", line)
        if m and (m.group(2) or m.group(1).startswith("/")):
            libs[m.group(1)] = m.group(2) or m.group(1)
    assert "not found" not in p.stdout
    return libs


def _needed(binary):
    p = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", p.stdout)


BASE_IMAGE_LIBS = {"libc6"}  # in bookworm-slim already (Essential's closure)


def test_runtime_packages_are_what_ldd_needs(built):
    runtime = set(stage_packages(1))
    pkgs, provides = _installed()
    libs = _ldd(built)
    owner = _dpkg_owners(libs.values())
    # ldd names the dynamic loader by its path, NEEDED by its file name.
    by_name = dict(libs)
    by_name.update({os.path.basename(k): v for k, v in libs.items()})
    direct = {owner[by_name[n]] for n in _needed(built)}
    lib_pkgs = runtime - {"ca-certificates"}
    assert direct - BASE_IMAGE_LIBS == lib_pkgs, \
        "libraries pgfleet links come from %s; the image installs %s" % (
            sorted(direct), sorted(runtime))
    base = {n for n, (req, _) in pkgs.items() if req}
    allowed = _closure(runtime | BASE_IMAGE_LIBS, pkgs, provides) | _closure(base, pkgs, provides)
    for soname, path in libs.items():
        assert owner[path] in allowed, "%s (%s) is not pulled in by %s" % (
            soname, owner[path], sorted(runtime))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chroot") is None,
                    reason="needs root for chroot")
def test_binary_runs_with_only_the_runtime_packages(built):
    """A root holding only the files of the runtime packages and what they
    depend on (libc6 included): pgfleet starts in it as uid 10001 and, with
    the Deployment's environment and no file, validates its configuration."""
    pkgs, provides = _installed()
    root = tempfile.mkdtemp(prefix="pgfleet-slim-root-")
    try:
        _run_in_slim_root(built, root, pkgs, provides)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_in_slim_root(built, root, pkgs, provides):
    os.chmod(root, 0o755)  # the image's user walks through it
    for pkg in sorted(_closure(set(stage_packages(1)) | BASE_IMAGE_LIBS, pkgs, provides)):
        files = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True,
                               text=True).stdout.split()
        for f in files:
            if f.startswith("/usr/share") or not os.path.lexists(f) or os.path.isdir(f):
                continue
            dest = root + f
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.lexists(dest):
                shutil.copy2(f, dest, follow_symlinks=False)
    os.makedirs(root + "/usr/local/bin", exist_ok=True)
    shutil.copy2(built, root + "/usr/local/bin/pgfleet")
    env = container_env(render(""), "Deployment", "pgfleet", "pgfleet")
    chroot = shutil.which("chroot")
    p = subprocess.run([chroot, "--userspec=10001:10001", root, "/usr/local/bin/pgfleet",
                        "-V"], capture_output=True, text=True, timeout=30, env={})
    assert p.returncode == 0 and p.stdout.strip(), p.stdout + p.stderr
    p = subprocess.run([chroot, "--userspec=10001:10001", root, "/usr/local/bin/pgfleet",
                        "--check"], capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    # without DB_HOST it says so: the loader, libc and pgfleet's own code ran
    p = subprocess.run([chroot, root, "/usr/local/bin/pgfleet", "--check"],
                       capture_output=True, text=True, timeout=30, env={})
    assert p.returncode == 1 and "DB_HOST" in p.stdout + p.stderr, p.stdout + p.stderr


# -- the HEALTHCHECK command ------------------------------------------------

def healthcheck_argv():
    [arg] = [a for i, a in stage_instructions(1) if i == "HEALTHCHECK"]
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", arg)
    assert m, "HEALTHCHECK should use the exec form: %s" % arg
    return json.loads(m.group(1))


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *a):
        pass


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_healthcheck_command_tells_200_from_the_rest():
    argv = healthcheck_argv()
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        def run(listen):
            env = {"PATH": "/usr/bin:/bin"}
            if listen is not None:
                env["PGFLEET_HTTP_LISTEN"] = listen
            return subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=10).returncode
        for listen in ("0.0.0.0:%d" % port, "127.0.0.1:%d" % port):
            _Health.status = 200
            assert run(listen) == 0, listen
            _Health.status = 503
            assert run(listen) != 0, listen
        srv.shutdown()
        srv.server_close()
        assert run("0.0.0.0:%d" % port) != 0  # nothing listens
    finally:
        srv.shutdown() if t.is_alive() else None
        srv.server_close()


# ---------------------------------------------------------------------------
# Issue 20: a configuration change rolls the pods; monitoring out of the box

def _deployment_configmap_refs(dep):
    spec = pod_spec(dep)
    refs = [ef["configMapRef"]["name"] for c in all_containers(spec)
            for ef in c.get("envFrom", []) if "configMapRef" in ef]
    refs += [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
    return refs


@pytest.mark.parametrize("rel", ["", "replication", "monitoring"])
def test_configmap_is_generated_with_a_hash_and_rolls_through_the_drain(rel):
    """k8s/pgfleet's ConfigMap comes from configMapGenerator: its name ends in
    a content hash, the Deployment's envFrom names exactly it (so a changed
    ConfigMap is a changed pod template: a rollout), and the rollout takes no
    pod away before its replacement is ready and drains the old one."""
    objs = render(rel)
    [cm] = [o for o in objs if o["kind"] == "ConfigMap"
            and o["metadata"]["name"].startswith("pgfleet-config-")]
    assert re.fullmatch(r"pgfleet-config-[a-z0-9]{10}", cm["metadata"]["name"]), \
        cm["metadata"]["name"]
    assert cm["metadata"]["name"] == "pgfleet-config-" + kustomize_hash("ConfigMap", cm["data"])
    assert not [o for o in objs if o["kind"] == "ConfigMap"
                and o["metadata"]["name"] == "pgfleet-config"], "an unhashed copy is left"
    dep = find(objs, "Deployment", "pgfleet")
    assert cm["metadata"]["name"] in _deployment_configmap_refs(dep)
    strategy = dep["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1
    spec = pod_spec(dep)
    [c] = [c for c in spec["containers"] if c["name"] == "pgfleet"]
    env = container_env(objs, "Deployment", "pgfleet", "pgfleet")
    sleep, timeout, grace = _shutdown_budget(spec, c, env)
    assert sleep > 0 and grace > sleep + timeout


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_a_changed_setting_renames_the_configmap_in_the_pod_template():
    """What `kubectl apply -k` sees after an edit of pgfleet-config.env: a new
    ConfigMap name in the Deployment's pod template (a rollout); the same
    content gives the same name (no rollout)."""
    work = tempfile.mkdtemp(prefix="pgfleet-k8s-")
    try:
        d = os.path.join(work, "pgfleet")
        shutil.copytree(os.path.join(K8S, "pgfleet"), d)

        def rendered_ref():
            p = subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, p.stderr
            objs = load_docs_text(p.stdout)
            return _deployment_configmap_refs(find(objs, "Deployment", "pgfleet"))[0]
        first = rendered_ref()
        assert first == rendered_ref()
        envf = os.path.join(d, "pgfleet-config.env")
        with open(envf) as f:
            text = f.read()
        assert "\nDEFAULT_POOL_SIZE=20\n" in text
        with open(envf, "w") as f:
            f.write(text.replace("\nDEFAULT_POOL_SIZE=20\n", "\nDEFAULT_POOL_SIZE=25\n"))
        second = rendered_ref()
        assert second != first and second.startswith("pgfleet-config-"), (first, second)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_replication_ini_is_mounted_for_config_watch():
    """The replication variant's ini is a ConfigMap with a stable name mounted
    as a directory (no subPath: the kubelet updates it through the ..data
    symlink swap, which a subPath mount never sees), and pgfleet is started
    with that file, so config_watch applies an edit of it without a restart."""
    objs = render("replication")
    dep = find(objs, "Deployment", "pgfleet")
    [c] = [c for c in pod_spec(dep)["containers"] if c["name"] == "pgfleet"]
    [vol] = [v for v in pod_spec(dep)["volumes"] if v["configMap"]["name"] == "pgfleet-ini"]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    assert "subPath" not in mount
    assert c["args"] == [mount["mountPath"] + "/pgfleet.ini"]
    cm = find(objs, "ConfigMap", "pgfleet-ini")
    assert "config_watch = 0" not in cm["data"]["pgfleet.ini"]
    assert config_default("config_watch") == "1"


# -- monitoring ---------------------------------------------------------------

MONITORING = os.path.join(K8S, "components", "monitoring")
DASHBOARD = os.path.join(MONITORING, "pgfleet-dashboard.json")
# Metrics the dashboard uses that docs/http.md does not list yet, each added
# by another part of issue 20 in parallel (remove a name here once its
# family is in docs/http.md):
METRICS_FROM_OTHER_PARTS = {
    "pgfleet_peers",  # item 1/3 (peers from DNS, one budget): the live fleet
    "pgfleet_database_connection_share",  # item 3 (one budget): this pod's share
}


def documented_metrics():
    with open(os.path.join(fx.REPO, "docs", "http.md")) as f:
        return dict(re.findall(r"^\| `(pgfleet_[a-z0-9_]+)` \| (\w+) \|", f.read(), re.M))


def test_monitoring_component_podmonitor_and_annotations():
    objs = render("monitoring")
    pm = find(objs, "PodMonitor", "pgfleet")
    # Its fields, by hand (the schema check knows only a hand-written subset).
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pm["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector",
                               "jobLabel", "podTargetLabels", "sampleLimit"}, pm["spec"]
    dep = find(objs, "Deployment", "pgfleet")
    tmpl = dep["spec"]["template"]
    assert labels_match(pm["spec"]["selector"]["matchLabels"], tmpl["metadata"]["labels"])
    [c] = [c for c in pod_spec(dep)["containers"] if c["name"] == "pgfleet"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    http_port = int(config_default("http_listen").rsplit(":", 1)[1])
    [ep] = pm["spec"]["podMetricsEndpoints"]
    assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, ep
    assert ports[ep["port"]] == http_port and ep["path"] == "/metrics"
    # Without the Operator: the annotations of the base's pod template.
    for rel in ("", "monitoring", "replication"):
        ann = find(render(rel), "Deployment", "pgfleet")["spec"]["template"]["metadata"][
            "annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(http_port)
        assert ann["prometheus.io/path"] == "/metrics"
    # The NetworkPolicy lets the monitoring namespace reach that port.
    np_ = find(objs, "NetworkPolicy", "pgfleet")
    assert any(p["port"] == http_port for rule in np_["spec"]["ingress"]
               for p in rule.get("ports", []))
    # The dashboard, as Grafana's sidecar finds it.
    cm = find(objs, "ConfigMap", "pgfleet-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    with open(DASHBOARD) as f:
        assert cm["data"]["pgfleet-dashboard.json"] == f.read()
    # The base stays without the Operator's kinds (its CRDs may be missing).
    assert not [o for o in render("") if o["kind"] == "PodMonitor"]


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append(("variable " + v["name"], v["query"]["query"]))
    return dash, out


def test_dashboard_uses_only_pgfleet_metrics_that_exist():
    dash, exprs = dashboard_exprs()
    assert dash["uid"] and dash["title"]
    docs = documented_metrics()
    assert "pgfleet_pool_max_wait_seconds" in docs and "pgfleet_transactions_total" in docs
    used = set()
    for title, expr in exprs:
        names = re.findall(r"\b(pgfleet_[a-z0-9_]+)", expr)
        assert names, "panel %r uses no pgfleet metric: %s" % (title, expr)
        for n in names:
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            if base != n:
                assert docs.get(base) == "histogram", "%s: %s is not a histogram" % (title, n)
                n = base
            assert n in docs or n in METRICS_FROM_OTHER_PARTS, \
                "panel %r uses %s, which docs/http.md does not list" % (title, n)
            used.add(n)
        # label names the dashboard filters or groups by exist on the family
        for grp in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in grp.split(",")):
                assert label in ("le", "instance", "database", "replica", "user", "state",
                                 "role", "host"), (title, label)
    # Each thing the issue asks for has a panel.
    for need in ("pgfleet_transactions_total", "pgfleet_wait_seconds",
                 "pgfleet_pool_max_wait_seconds", "pgfleet_clients",
                 "pgfleet_server_connections", "pgfleet_replica_state",
                 "pgfleet_replica_lag_seconds", "pgfleet_peers",
                 "pgfleet_database_paused", "pgfleet_database_pool_size"):
        assert need in used, need
    titles = [p["title"] for p in dash["panels"]]
    assert len(titles) == len(set(titles))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_metrics_are_served(service, pgfleet):
    """The families the dashboard uses are in a live /metrics (those of
    METRICS_FROM_OTHER_PARTS once they land)."""
    from test_http import scrape
    fleet = pgfleet()
    with fleet.connect() as c:
        c.execute("SELECT 1")
    types, _ = scrape(fleet)
    _, exprs = dashboard_exprs()
    for title, expr in exprs:
        for n in re.findall(r"\b(pgfleet_[a-z0-9_]+)", expr):
            n = re.sub(r"_(bucket|sum|count)$", "", n)
            if n in METRICS_FROM_OTHER_PARTS and n not in types:
                continue
            assert n in types, "panel %r: %s not in /metrics" % (title, n)


# ---------------------------------------------------------------------------
# The schema check (issue 20): every kustomization, as rendered, against
# Kubernetes' OpenAPI schemas (npm kubernetes-models, offline), strictly:
# wrong types, missing required fields and unknown fields.  tests/k8s/
# validate.mjs says how; scripts/install-deps.sh installs its node_modules.

SCHEMA_DIR = os.path.join(fx.REPO, "tests", "k8s")
VALIDATOR = os.path.join(SCHEMA_DIR, "validate.mjs")


def kustomization_dirs():
    """Every directory under k8s/ with a kustomization.yaml: overlays, bases,
    components."""
    rels = (os.path.relpath(os.path.dirname(p), K8S)
            for p in glob.glob(os.path.join(K8S, "**", "kustomization.yaml"), recursive=True))
    return sorted("" if r == "." else r for r in rels)  # "" is k8s/ itself, as in KUSTOMIZATIONS


def validate_schema(text):
    """(exit code, problem lines) of tests/k8s/validate.mjs on a YAML stream."""
    node = shutil.which("node")
    assert node, "node not installed: run scripts/install-deps.sh"
    for pkg in ("kubernetes-models", "yaml"):
        assert os.path.isfile(os.path.join(SCHEMA_DIR, "node_modules", pkg, "package.json")), \
            "tests/k8s/node_modules/%s missing: run scripts/install-deps.sh" % pkg
    p = subprocess.run([node, VALIDATOR], input=text, capture_output=True, text=True,
                       timeout=120, cwd=SCHEMA_DIR, env=dict(os.environ, VALIDATE_DEBUG="1"))
    assert p.returncode in (0, 1), "validator failed (%d): %s" % (p.returncode, p.stderr)
    # No object the validator never looked into (a free-form field, whose
    # keys the unknown-field check cannot judge) in what passes here.  (A
    # value of the wrong type, an object for an int-or-string, is not looked
    # into either, and reported as such.)
    blind = [ln for ln in p.stderr.splitlines() if "never looked into" in ln]
    assert p.returncode or not blind, blind
    return p.returncode, p.stdout.splitlines()


def rendered_text(rel):
    """`kubectl kustomize k8s/<rel>`; without kubectl (not a Debian package),
    this module's renderer, which test_kubectl_kustomize_renders_the_same_objects
    holds to kubectl's output where kubectl is installed."""
    if shutil.which("kubectl") is None:
        return yaml.safe_dump_all(render(rel))
    p = subprocess.run(["kubectl", "kustomize", os.path.join(K8S, rel)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_schema_check_covers_every_kustomization():
    dirs = kustomization_dirs()
    assert set(KUSTOMIZATIONS + COMPONENTS + ["postgres", "pgfleet"]) <= set(dirs), dirs


@pytest.mark.parametrize("rel", kustomization_dirs(), ids=lambda r: r or "k8s")
def test_rendered_manifests_pass_the_schema_check(rel):
    text = rendered_text(rel)
    code, problems = validate_schema(text)
    assert code == 0 and not problems, "k8s/%s:\n%s" % (rel, "\n".join(problems))
    assert load_docs_text(text), "k8s/%s renders nothing" % rel


def test_schema_check_reports_what_is_wrong_and_where():
    """The check is shown to catch things: a broken copy of the rendered
    pgfleet base, and a broken PodMonitor, each problem with its path."""
    objs = load_docs_text(rendered_text("pgfleet"))
    dep = find(objs, "Deployment", "pgfleet")
    assert not validate_schema(yaml.safe_dump_all([dep]))[1]
    spec = pod_spec(dep)
    [i] = [i for i, c in enumerate(spec["containers"]) if c["name"] == "pgfleet"]
    c = spec["containers"][i]
    c["readinessprobe"] = c.pop("readinessProbe")      # unknown field (case)
    dep["spec"]["replicas"] = "two"                     # wrong type
    del spec["containers"][i]["name"]                   # missing required field
    spec["containers"][i]["ports"][0]["containerPort"] = "6432"
    dep["spec"]["template"]["metadata"]["lables"] = {"a": "b"}
    svc = find(objs, "Service", "pgfleet")
    svc["spec"]["ports"][0]["targetPort"] = {"name": "pgfleet"}   # int-or-string
    pm = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
          "metadata": {"name": "pgfleet"},
          "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "pgfleet"}},
                   "podMetricsEndpoints": [{"port": "http", "intervall": "15s",
                                            "honorLabels": "yes"}]}}
    crd = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    nameless = {"apiVersion": "v1", "kind": "ConfigMap", "metdata": {"name": "x"},
                "data": {"port": 6432}}
    code, problems = validate_schema(yaml.safe_dump_all([dep, svc, pm, crd, nameless]))
    c0 = "spec.template.spec.containers[%d]" % i
    assert code == 1
    assert sorted(problems) == sorted([
        "Deployment/pgfleet: spec.replicas: wrong type: must be integer",
        "Deployment/pgfleet: %s: missing required field \"name\"" % c0,
        "Deployment/pgfleet: %s.readinessprobe: unknown field" % c0,
        "Deployment/pgfleet: %s.ports[0].containerPort: wrong type: must be integer" % c0,
        "Deployment/pgfleet: spec.template.metadata.lables: unknown field",
        "Service/pgfleet: spec.ports[0].targetPort: wrong type: must be string or integer",
        "PodMonitor/pgfleet: spec.podMetricsEndpoints[0].intervall: unknown field",
        "PodMonitor/pgfleet: spec.podMetricsEndpoints[0].honorLabels: wrong type: must be boolean",
        "Widget/w: (object): unchecked kind: no schema for example.com/v1 Widget",
        "ConfigMap/(no name): metadata.name: missing required field \"name\"",
        "ConfigMap/(no name): metdata: unknown field",
        "ConfigMap/(no name): data.port: wrong type: must be string",
    ]), "\n".join(problems)
