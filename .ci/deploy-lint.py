"""Cross-file checks of the deployment files that no off-the-shelf linter does.

Run by .ci/deploy-checks.sh with the Python of its tool venv (PyYAML and
jsonschema come with kubernetes-validate):

  deploy-lint.py kubernetes RENDERED.yaml --variant native|classic
      --alerts deploy/prometheus/alerts.yaml --core-out CORE.yaml
  deploy-lint.py compose RESOLVED.yaml --prometheus-config FILE
  deploy-lint.py verify RENDERED.yaml

`verify` checks the rendered API-pod example (deploy/kubernetes/verify): every
route of its tokenproxy config is a verify route to a loopback upstream, each
verify listener is a containerPort of the native sidecar, the Service targets
one of them, the NetworkPolicy admits only tokenproxy's ports, the API
container exposes none, and the sidecar's startupProbe asks /readyz (keys
loaded) on the admin port.

`kubernetes` checks kustomize's output: the tokenproxy sidecar's shape,
hardening, probes and resources; that the ConfigMap, Secret, ports and
annotations agree with the tokenproxy config inside the ConfigMap; the
prometheus-operator resources against small schemas written for the fields
used here (kubernetes-validate has no CRD schemas); and that the
PrometheusRule carries exactly the groups of alerts.yaml. It writes the
built-in kinds to CORE.yaml for kubernetes-validate.

`compose` checks `docker-compose config` output: files it mounts exist,
health-gated dependencies have health checks, pulled images are pinned by
digest, and the tokenproxy config agrees with the compose file.

`stub-config` copies a tokenproxy config with every client_secret_file (and
the shared cache's password_file) pointed at one local file and its
encryption_key_file at a fresh key beside it, and prints the ${VAR} names it
uses, so that `tokenproxy check` can load a deployment's config outside its
container.

With --expect-shared-cache (kubernetes) the config must have a shared_cache
block whose key and password files are mounted Secret files; with
--expect-fleet N (compose) N more tokenproxy services must share a Redis.

Prints one line per problem and exits 1 if there is any.
"""

import argparse
import base64
import os
import re
import sys

import jsonschema
import yaml

SIDECAR = "tokenproxy"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def closed(properties, required=()):
    """A JSON schema object that accepts only the named properties."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STRING = {"type": "string"}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
METADATA = {
    "type": "object",
    "properties": {"name": STRING, "labels": STRING_MAP, "annotations": STRING_MAP},
    "required": ["name"],
}

# The subset of monitoring.coreos.com/v1 that the examples use. A field the
# examples do not use yet must be added here before it is used.
CRD_SCHEMAS = {
    "PodMonitor": closed(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PodMonitor"},
            "metadata": METADATA,
            "spec": closed(
                {
                    "selector": closed({"matchLabels": STRING_MAP}, ["matchLabels"]),
                    "namespaceSelector": closed({"any": {"type": "boolean"}}),
                    "podMetricsEndpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": closed(
                            {
                                "port": STRING,
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": DURATION,
                                "scrapeTimeout": DURATION,
                            },
                            ["port"],
                        ),
                    },
                },
                ["selector", "podMetricsEndpoints"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    "PrometheusRule": closed(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": METADATA,
            "spec": closed(
                {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": closed(
                            {
                                "name": STRING,
                                "interval": DURATION,
                                "rules": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": closed(
                                        {
                                            "alert": STRING,
                                            "record": STRING,
                                            "expr": STRING,
                                            "for": DURATION,
                                            "labels": STRING_MAP,
                                            "annotations": STRING_MAP,
                                        },
                                        ["expr"],
                                    ),
                                },
                            },
                            ["name", "rules"],
                        ),
                    }
                },
                ["groups"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
}


class Report:
    def __init__(self):
        self.problems = []

    def check(self, ok, where, message):
        if not ok:
            self.problems.append(f"{where}: {message}")
        return ok


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def port_of(listen):
    """'0.0.0.0:9901' -> (host, 9901); None if it does not parse."""
    host, sep, port = str(listen).rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host, int(port)


def check_tokenproxy_config(report, where, config):
    """Checks every deployment of tokenproxy shares; returns the admin port."""
    if not report.check(isinstance(config, dict), where, "config is not a mapping"):
        return None
    admin = port_of((config.get("admin") or {}).get("listen"))
    report.check(admin is not None, where, "admin.listen must be HOST:PORT")
    for route in config.get("routes") or []:
        name = route.get("name", "?")
        listen = port_of(route.get("listen"))
        report.check(
            listen is not None and listen[0] in LOOPBACK_HOSTS,
            where,
            f"route {name}: listen {route.get('listen')!r} must be on 127.0.0.1 "
            "so only the app next to tokenproxy can use it",
        )
    for name, provider in (config.get("providers") or {}).items():
        report.check(
            "client_secret" not in provider,
            where,
            f"provider {name}: use client_secret_file, never a literal client_secret",
        )
        report.check(
            "client_secret_file" in provider,
            where,
            f"provider {name}: client_secret_file is missing",
        )
    return admin[1] if admin else None


def secret_files(config):
    """(label, path) of every file in a tokenproxy config that holds a secret."""
    files = []
    for pname, provider in ((config or {}).get("providers") or {}).items():
        if provider.get("client_secret_file"):
            files.append((f"provider {pname}", provider["client_secret_file"]))
    shared = (config or {}).get("shared_cache") or {}
    if shared.get("encryption_key_file"):
        files.append(("shared_cache.encryption_key_file", shared["encryption_key_file"]))
    if (shared.get("redis") or {}).get("password_file"):
        files.append(("shared_cache.redis.password_file", shared["redis"]["password_file"]))
    return files


def http_probe(report, where, probe, path, admin_port, named_ports):
    get = (probe or {}).get("httpGet") or {}
    if not report.check(bool(get), where, f"needs an httpGet probe on {path}"):
        return
    report.check(get.get("path") == path, where, f"probe path is {get.get('path')!r}, want {path!r}")
    port = named_ports.get(get.get("port"), get.get("port"))
    report.check(
        port == admin_port, where, f"probe port {get.get('port')!r} is not the admin port {admin_port}"
    )


def find_sidecar(report, deployment, variant):
    name = deployment["metadata"]["name"]
    spec = deployment["spec"]["template"]["spec"]
    inits = [c for c in spec.get("initContainers") or [] if c["name"] == SIDECAR]
    regular = [c for c in spec.get("containers") or [] if c["name"] == SIDECAR]
    for c in spec.get("containers") or []:
        report.check(
            "restartPolicy" not in c,
            f"Deployment {name} container {c['name']}",
            "restartPolicy is only allowed on init containers",
        )
    if variant == "native":
        report.check(not regular, f"Deployment {name}", "tokenproxy must not be in containers")
        if not report.check(len(inits) == 1, f"Deployment {name}", "needs tokenproxy in initContainers"):
            return None
        report.check(
            inits[0].get("restartPolicy") == "Always",
            f"Deployment {name}",
            "the tokenproxy init container needs restartPolicy: Always to be a sidecar",
        )
        return inits[0]
    report.check(not inits, f"Deployment {name}", "tokenproxy must not be in initContainers")
    if not report.check(len(regular) == 1, f"Deployment {name}", "needs tokenproxy in containers"):
        return None
    return regular[0]


def check_kubernetes(report, docs, variant, alerts_path, expect_shared_cache=False):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append(doc)
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}

    for kind, schema in CRD_SCHEMAS.items():
        report.check(kind in by_kind, "rendered output", f"has no {kind}")
        for doc in by_kind.get(kind, []):
            for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path) or "(top)"
                report.check(False, f"{kind} {doc['metadata'].get('name')}", f"{path}: {error.message}")

    deployments = [
        d
        for d in by_kind.get("Deployment", [])
        if SIDECAR
        in [c["name"] for c in (d["spec"]["template"]["spec"].get("initContainers") or [])]
        + [c["name"] for c in d["spec"]["template"]["spec"].get("containers") or []]
    ]
    report.check(deployments, "rendered output", "no Deployment has a tokenproxy container")
    for deployment in deployments:
        check_deployment(
            report,
            deployment,
            variant,
            config_maps,
            secrets,
            by_kind.get("PodMonitor", []),
            expect_shared_cache,
        )

    with open(alerts_path, encoding="utf-8") as f:
        alerts = yaml.safe_load(f)
    for rule in by_kind.get("PrometheusRule", []):
        report.check(
            rule.get("spec", {}).get("groups") == alerts.get("groups"),
            f"PrometheusRule {rule['metadata']['name']}",
            f"spec.groups differ from the groups in {alerts_path}; keep the two in step",
        )


def check_deployment(
    report, deployment, variant, config_maps, secrets, pod_monitors, expect_shared_cache=False
):
    name = deployment["metadata"]["name"]
    template = deployment["spec"]["template"]
    pod = template["spec"]
    sidecar = find_sidecar(report, deployment, variant)
    if sidecar is None:
        return
    where = f"Deployment {name} container {SIDECAR}"

    sc = sidecar.get("securityContext") or {}
    pod_sc = pod.get("securityContext") or {}
    report.check(sc.get("runAsNonRoot") is True, where, "securityContext.runAsNonRoot must be true")
    report.check(
        isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0,
        where,
        "securityContext.runAsUser must be a numeric non-root user",
    )
    report.check(
        sc.get("readOnlyRootFilesystem") is True, where, "securityContext.readOnlyRootFilesystem must be true"
    )
    report.check(
        sc.get("allowPrivilegeEscalation") is False,
        where,
        "securityContext.allowPrivilegeEscalation must be false",
    )
    report.check(
        "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
        where,
        "securityContext must drop ALL capabilities",
    )
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    report.check(seccomp == "RuntimeDefault", where, "needs seccompProfile RuntimeDefault")
    resources = sidecar.get("resources") or {}
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            report.check(
                resource in (resources.get(section) or {}),
                where,
                f"resources.{section}.{resource} is not set",
            )

    # The config file: --config names a file in a ConfigMap mounted as a
    # directory (a subPath mount never sees updates).
    args = sidecar.get("args") or []
    config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    if not report.check(config_path, where, "args must name the file with --config"):
        return
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = {m["mountPath"]: m for m in sidecar.get("volumeMounts") or []}
    config_mount = mounts.get(os.path.dirname(config_path))
    if not report.check(config_mount, where, f"nothing is mounted at {os.path.dirname(config_path)}"):
        return
    report.check("subPath" not in config_mount, where, "mount the config directory, not a subPath")
    config_volume = volumes.get(config_mount["name"], {})
    cm_name = (config_volume.get("configMap") or {}).get("name")
    if not report.check(
        cm_name in config_maps, where, f"config volume must be a ConfigMap from this render, got {cm_name!r}"
    ):
        return
    data = config_maps[cm_name].get("data") or {}
    key = os.path.basename(config_path)
    if not report.check(key in data, f"ConfigMap {cm_name}", f"has no key {key}"):
        return
    config = yaml.safe_load(data[key])
    cm_where = f"ConfigMap {cm_name} {key}"
    admin_port = check_tokenproxy_config(report, cm_where, config)

    named_ports = {p["name"]: p["containerPort"] for p in sidecar.get("ports") or [] if "name" in p}
    report.check(
        admin_port in named_ports.values(), where, f"declares no containerPort {admin_port} (admin.listen)"
    )
    http_probe(
        report, f"{where} startupProbe", sidecar.get("startupProbe"), "/readyz", admin_port, named_ports
    )
    http_probe(
        report, f"{where} readinessProbe", sidecar.get("readinessProbe"), "/readyz", admin_port, named_ports
    )
    http_probe(
        report, f"{where} livenessProbe", sidecar.get("livenessProbe"), "/healthz", admin_port, named_ports
    )

    env = {e["name"] for e in sidecar.get("env") or []}
    for var in sorted(set(ENV_REF.findall(data[key]))):
        report.check(var in env, cm_where, f"uses ${{{var}}}, which the container's env does not set")

    if expect_shared_cache:
        report.check(
            "shared_cache" in (config or {}), cm_where, "has no shared_cache block"
        )
    for pname, secret_file in secret_files(config):
        mount = mounts.get(os.path.dirname(secret_file))
        if not report.check(
            mount, cm_where, f"{pname}: nothing is mounted at {os.path.dirname(secret_file)}"
        ):
            continue
        report.check("subPath" not in mount, where, "mount the secret directory, not a subPath (rotation)")
        secret = volumes.get(mount["name"], {}).get("secret")
        if not report.check(
            secret, cm_where, f"{pname}: {os.path.dirname(secret_file)} is not a Secret volume"
        ):
            continue
        items = secret.get("items")
        files = {i["path"]: i["key"] for i in items} if items else None
        secret_doc = secrets.get(secret["secretName"])
        keys = set((secret_doc or {}).get("data") or {}) | set((secret_doc or {}).get("stringData") or {})
        filename = os.path.basename(secret_file)
        if files is not None:
            report.check(
                filename in files, cm_where, f"{pname}: the Secret volume has no item {filename}"
            )
            if secret_doc and filename in files:
                report.check(
                    files[filename] in keys, f"Secret {secret['secretName']}", f"has no key {files[filename]}"
                )
        elif secret_doc:
            report.check(filename in keys, f"Secret {secret['secretName']}", f"has no key {filename}")

    annotations = template["metadata"].get("annotations") or {}
    report.check(
        annotations.get("prometheus.io/scrape") == "true", where, 'pod needs prometheus.io/scrape: "true"'
    )
    report.check(
        annotations.get("prometheus.io/port") == str(admin_port),
        where,
        "prometheus.io/port must be the admin port",
    )
    report.check(
        annotations.get("prometheus.io/path") == "/metrics", where, "prometheus.io/path must be /metrics"
    )

    labels = template["metadata"].get("labels") or {}
    for monitor in pod_monitors:
        mwhere = f"PodMonitor {monitor['metadata']['name']}"
        selector = ((monitor.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not report.check(
            selector and selector.items() <= labels.items(),
            mwhere,
            f"selector does not match Deployment {name}'s pods",
        ):
            continue
        for endpoint in (monitor.get("spec") or {}).get("podMetricsEndpoints") or []:
            report.check(
                named_ports.get(endpoint.get("port")) == admin_port,
                mwhere,
                f"port {endpoint.get('port')!r} is not the sidecar's admin port",
            )
            report.check(endpoint.get("path", "/metrics") == "/metrics", mwhere, "path must be /metrics")


def volume_source(volume):
    if isinstance(volume, dict):
        return volume.get("source"), volume.get("target"), volume.get("type", "bind")
    parts = volume.split(":")
    if len(parts) >= 2 and parts[0].startswith(("/", ".")):
        return parts[0], parts[1], "bind"
    return parts[0], parts[1] if len(parts) > 1 else None, "volume"


def check_compose(report, compose, prometheus_config, expect_fleet=0):
    services = compose.get("services") or {}
    built = {s.get("image") for s in services.values() if s.get("build")}

    for name, secret in (compose.get("secrets") or {}).items():
        if "file" in secret:
            report.check(
                os.path.isfile(secret["file"]), f"secret {name}", f"file {secret['file']} does not exist"
            )

    for name, service in services.items():
        where = f"service {name}"
        for volume in service.get("volumes") or []:
            source, _, kind = volume_source(volume)
            if kind == "bind":
                report.check(os.path.exists(source), where, f"mount source {source} does not exist")
        image = service.get("image", "")
        if image not in built:
            report.check("@sha256:" in image, where, f"pin image {image!r} by digest")
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dep: {} for dep in depends_on}
        for dep, cond in depends_on.items():
            if (cond or {}).get("condition") == "service_healthy":
                report.check(
                    "healthcheck" in services.get(dep, {}),
                    where,
                    f"waits for {dep} to be healthy, which has no healthcheck",
                )

    proxy = services.get(SIDECAR)
    if not report.check(proxy, "compose file", f"has no {SIDECAR} service"):
        return
    admin_port = check_compose_proxy(report, SIDECAR, proxy)
    fleet = [
        name
        for name, service in services.items()
        if name != SIDECAR and "run" in (service.get("command") or [])[:1]
        and service.get("image") == proxy.get("image")
    ]
    for name in fleet:
        check_compose_proxy(report, name, services[name], shared=True)
        report.check(
            "redis" in ((services[name].get("depends_on") or {})),
            f"service {name}",
            "must depend on the redis service",
        )
    if expect_fleet:
        report.check(
            len(fleet) == expect_fleet,
            "compose file",
            f"{len(fleet)} tokenproxy replicas besides {SIDECAR}, want {expect_fleet}",
        )
        report.check("redis" in services, "compose file", "has no redis service")

    with open(prometheus_config, encoding="utf-8") as f:
        prometheus = yaml.safe_load(f)
    targets = [
        t
        for job in prometheus.get("scrape_configs") or []
        for static in job.get("static_configs") or []
        for t in static.get("targets") or []
    ]
    report.check(
        f"{SIDECAR}:{admin_port}" in targets, prometheus_config, f"does not scrape {SIDECAR}:{admin_port}"
    )


def check_compose_proxy(report, name, proxy, shared=False):
    """Checks one tokenproxy service and its config; returns the admin port."""
    where = f"service {name}"
    command = proxy.get("command") or []
    config_path = command[command.index("--config") + 1] if "--config" in command[:-1] else None
    if not report.check(config_path, where, "command must name the file with --config"):
        return
    host_file = None
    for volume in proxy.get("volumes") or []:
        source, target, kind = volume_source(volume)
        if kind == "bind" and target and os.path.dirname(config_path) == target:
            host_file = os.path.join(source, os.path.basename(config_path))
        report.check(
            target != config_path,
            where,
            "mount the config directory, not the single file (edits would not arrive)",
        )
    if not report.check(
        host_file and os.path.isfile(host_file),
        where,
        f"no host directory with the config is mounted for {config_path}",
    ):
        return
    with open(host_file, encoding="utf-8") as f:
        text = f.read()
    config = yaml.safe_load(text)
    admin_port = check_tokenproxy_config(report, host_file, config)
    env = proxy.get("environment") or {}
    for var in sorted(set(ENV_REF.findall(text))):
        report.check(var in env, host_file, f"uses ${{{var}}}, which the service's environment does not set")
    secret_paths = set()
    for s in proxy.get("secrets") or []:
        source = s if isinstance(s, str) else s.get("source")
        target = source if isinstance(s, str) else s.get("target", source)
        secret_paths.add(target if target.startswith("/") else f"/run/secrets/{target}")
    for label, path in secret_files(config):
        report.check(
            path in secret_paths,
            host_file,
            f"{label}: {path} is not one of the service's secrets",
        )
    if shared:
        report.check("shared_cache" in (config or {}), host_file, "has no shared_cache block")
    health = " ".join((proxy.get("healthcheck") or {}).get("test") or [])
    report.check(
        f":{admin_port}/readyz" in health,
        where,
        f"healthcheck must ask /readyz on the admin port {admin_port}",
    )
    return admin_port


def check_verify(report, docs):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append(doc)
    deployments = by_kind.get("Deployment", [])
    if not report.check(len(deployments) == 1, "rendered output", "needs exactly one Deployment"):
        return
    deployment = deployments[0]
    where = f"Deployment {deployment['metadata']['name']}"
    sidecar = find_sidecar(report, deployment, "native")
    if sidecar is None:
        return
    pod = deployment["spec"]["template"]["spec"]
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    mounted = [
        v["configMap"]["name"]
        for v in pod.get("volumes") or []
        if "configMap" in v
        and any(m["name"] == v["name"] for m in sidecar.get("volumeMounts") or [])
    ]
    configs = [config_maps[n] for n in mounted if n in config_maps]
    if not report.check(len(configs) == 1, where, "the sidecar must mount one tokenproxy ConfigMap"):
        return
    config = yaml.safe_load(configs[0]["data"]["config.yaml"])
    admin = port_of((config.get("admin") or {}).get("listen"))
    report.check(admin is not None, where, "admin.listen must be HOST:PORT")
    ports = {p.get("name"): p["containerPort"] for p in sidecar.get("ports") or []}
    verify_ports = set()
    for route in config.get("routes") or []:
        name = route.get("name", "?")
        report.check(
            "verify" in route and "token" not in route,
            where,
            f"route {name}: the API's pod has verify routes only",
        )
        upstream = str(route.get("upstream", ""))
        report.check(
            upstream.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")),
            where,
            f"route {name}: the upstream {upstream!r} must be the API on loopback",
        )
        listen = port_of(route.get("listen"))
        if report.check(listen is not None, where, f"route {name}: listen must be HOST:PORT"):
            verify_ports.add(listen[1])
            report.check(
                listen[1] in ports.values(),
                where,
                f"route {name}: port {listen[1]} is not a containerPort of the sidecar",
            )
    if admin:
        report.check(admin[1] in ports.values(), where, "the admin port is not a containerPort")
        http_probe(report, f"{where} startupProbe", sidecar.get("startupProbe"), "/readyz", admin[1], ports)
        http_probe(report, f"{where} readinessProbe", sidecar.get("readinessProbe"), "/readyz", admin[1], ports)
    for c in pod.get("containers") or []:
        report.check(
            not c.get("ports"),
            f"{where} container {c['name']}",
            "the API container exposes no port: callers go through tokenproxy",
        )
    for svc in by_kind.get("Service", []):
        for p in svc["spec"].get("ports") or []:
            target = ports.get(p.get("targetPort"), p.get("targetPort"))
            report.check(
                target in verify_ports,
                f"Service {svc['metadata']['name']}",
                f"targetPort {p.get('targetPort')!r} is not a verify listener",
            )
    policies = by_kind.get("NetworkPolicy", [])
    report.check(policies, "rendered output", "needs a NetworkPolicy admitting only tokenproxy's ports")
    allowed = verify_ports | ({admin[1]} if admin else set())
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            rule_ports = rule.get("ports")
            report.check(
                bool(rule_ports),
                f"NetworkPolicy {policy['metadata']['name']}",
                "an ingress rule without ports admits the API's own port",
            )
            for p in rule_ports or []:
                port = ports.get(p.get("port"), p.get("port"))
                report.check(
                    port in allowed,
                    f"NetworkPolicy {policy['metadata']['name']}",
                    f"port {p.get('port')!r} is not a tokenproxy port",
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    k8s = sub.add_parser("kubernetes")
    k8s.add_argument("rendered")
    k8s.add_argument("--variant", choices=["native", "classic"], required=True)
    k8s.add_argument("--alerts", required=True)
    k8s.add_argument("--core-out", required=True)
    k8s.add_argument("--expect-shared-cache", action="store_true")
    compose = sub.add_parser("compose")
    compose.add_argument("resolved")
    compose.add_argument("--prometheus-config", required=True)
    compose.add_argument("--expect-fleet", type=int, default=0)
    verify = sub.add_parser("verify")
    verify.add_argument("rendered")
    stub = sub.add_parser("stub-config")
    stub.add_argument("config")
    stub.add_argument("--secret-file", required=True)
    stub.add_argument("--out", required=True)
    args = parser.parse_args()

    if args.command == "stub-config":
        with open(args.config, encoding="utf-8") as f:
            text = f.read()
        config = yaml.safe_load(text)
        for provider in (config.get("providers") or {}).values():
            if "client_secret_file" in provider:
                provider["client_secret_file"] = args.secret_file
        shared = config.get("shared_cache")
        if shared:
            key_file = os.path.join(os.path.dirname(args.out), "cache-key")
            with open(key_file, "w", encoding="utf-8") as f:
                f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
            shared["encryption_key_file"] = key_file
            if (shared.get("redis") or {}).get("password_file"):
                shared["redis"]["password_file"] = args.secret_file
        with open(args.out, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        print("\n".join(sorted(set(ENV_REF.findall(text)))))
        return 0

    report = Report()
    if args.command == "kubernetes":
        docs = load_all(args.rendered)
        check_kubernetes(report, docs, args.variant, args.alerts, args.expect_shared_cache)
        core = [d for d in docs if not d.get("apiVersion", "").startswith("monitoring.coreos.com/")]
        with open(args.core_out, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(core, f, sort_keys=False)
    elif args.command == "verify":
        check_verify(report, load_all(args.rendered))
    else:
        check_compose(report, load_all(args.resolved)[0], args.prometheus_config, args.expect_fleet)

    for problem in report.problems:
        print(f"  {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
