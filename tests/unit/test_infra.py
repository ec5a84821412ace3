"""Static checks of the deployment files: docker/, infra/ (KubeRay, cluster launcher, MLflow,
compose) and docs/cluster.md.

Nothing here needs a cluster or a docker daemon. Each check is a function of the parsed documents
that returns a list of problems, so the tests below can plant a mistake into a copy of the real
documents and see it caught.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose" / "docker-compose.yaml"
GUIDE = ROOT / "docs" / "cluster.md"
DOCKERFILES = {"dckd-ray": ROOT / "docker" / "ray.Dockerfile", "dckd-mlflow": ROOT / "docker" / "mlflow.Dockerfile"}
EXPERIMENT = ROOT / "experiments" / "paper" / "sr_common.yaml"
PROJECT_VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)

# Official images allowed besides ours, always with an explicit, non-latest tag.
OFFICIAL_IMAGES = {"minio/minio", "postgres", "rayproject/ray", "python"}
# Variables read by Ray, AWS SDKs, MLflow's server, Postgres and MinIO themselves, not by our code.
KNOWN_ENV = {
    "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_SERVER_ALLOWED_HOSTS",
    "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|PRIVATE_KEY", re.I)
NOT_SECRET_NAME = re.compile(r"(_PATH|_FILE|_MODE)$", re.I)
PLACEHOLDER = re.compile(r"^(|REPLACE_ME.*|\$\{[A-Za-z_][A-Za-z0-9_]*(:?[?-][^}]*)?\})$")
INLINE_CREDENTIALS = re.compile(r"://[^/\s:@]+:([^@\s]+)@")
MODULE = re.compile(r"python3?\s+-m\s+([A-Za-z_][\w.]*)")
REPRODUCE = re.compile(r"trainers\.reproduce\s+([A-Za-z0-9_]+)")
CONFIG_PATH = re.compile(r"experiments/[\w./-]+\.ya?ml")


# --------------------------------------------------------------------------- loading
def load_documents() -> dict[str, list[Any]]:
    """Every YAML file under infra/ (the compose file included), multi-document, by relative path."""
    docs = {}
    for path in sorted(INFRA.rglob("*.y*ml")):
        docs[str(path.relative_to(ROOT))] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def walk(node: Any) -> Iterator[tuple[Any, Any]]:
    """(key, value) of every mapping entry and (None, item) of every list item, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield None, item
            yield from walk(item)


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    for _, value in walk(node):
        if isinstance(value, str):
            yield value


def containers(doc: Any) -> Iterator[dict]:
    """Kubernetes container specs anywhere in a document."""
    for key, value in walk(doc):
        if key in ("containers", "initContainers") and isinstance(value, list):
            yield from (c for c in value if isinstance(c, dict))


def is_compose(doc: Any) -> bool:
    return isinstance(doc, dict) and "services" in doc and "kind" not in doc


def launcher_env(doc: Any) -> dict[str, str]:
    """`-e NAME=VALUE` options of a cluster-launcher config's docker.run_options."""
    env = {}
    if isinstance(doc, dict) and isinstance(doc.get("docker"), dict):
        for option in doc["docker"].get("run_options", []):
            m = re.match(r"^(?:-e|--env)[ =]([A-Za-z_][A-Za-z0-9_]*)=(.*)$", option.strip())
            if m:
                env[m.group(1)] = m.group(2)
    return env


def environment(doc: Any) -> list[tuple[str, Any]]:
    """(name, value) of every environment variable a document sets; value None when it is a reference."""
    found: list[tuple[str, Any]] = []
    for c in containers(doc):
        for e in c.get("env", []) or []:
            found.append((e["name"], e.get("value") if "valueFrom" not in e else None))
    if isinstance(doc, dict) and doc.get("kind") in ("ConfigMap", "Secret"):
        for section in ("data", "stringData"):
            found.extend((doc.get(section) or {}).items())
    if is_compose(doc):
        for service in doc["services"].values():
            env = service.get("environment") or {}
            if isinstance(env, list):
                env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
            found.extend(env.items())
    found.extend(launcher_env(doc).items())
    return found


# --------------------------------------------------------------------------- checks
def check_images(docs: dict[str, list[Any]]) -> list[str]:
    """Images are ours (built from docker/, tagged with the project version) or pinned official ones."""
    errors = []
    for path, documents in docs.items():
        for doc in documents:
            images = [v for k, v in walk(doc) if k == "image" and isinstance(v, str)]
            for image in images:
                name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
                short = name.split("/")[-1]
                if short in DOCKERFILES:
                    if tag != PROJECT_VERSION:
                        errors.append(f"{path}: {image}: our images are tagged {PROJECT_VERSION}")
                elif name not in OFFICIAL_IMAGES:
                    errors.append(f"{path}: {image}: neither built from docker/ nor a known official image")
                elif not tag or tag == "latest":
                    errors.append(f"{path}: {image}: not pinned")
            if is_compose(doc):
                for svc, service in doc["services"].items():
                    build = service.get("build")
                    if build:
                        dockerfile = (Path(path).parent / build["context"] / build["dockerfile"])
                        short = str(service.get("image", "")).split(":")[0].split("/")[-1]
                        if DOCKERFILES.get(short) != (ROOT / dockerfile).resolve():
                            errors.append(f"{path}: {svc}: builds {build['dockerfile']} but is tagged {short}")
    return errors


def check_entrypoints(texts: dict[str, str]) -> list[str]:
    """Every `python -m MODULE` exists; every reproduced table and experiments/ path exists."""
    errors = []
    for where, text in texts.items():
        for module in MODULE.findall(text):
            if importlib.util.find_spec(module) is None:
                errors.append(f"{where}: python -m {module}: no such module")
        for table in REPRODUCE.findall(text):
            if table not in ("TABLE",) and not list((ROOT / "experiments" / "tables").glob(f"{table}*.yaml")):
                errors.append(f"{where}: trainers.reproduce {table}: no experiments/tables/{table}*.yaml")
        for config in CONFIG_PATH.findall(text):
            if not (ROOT / config).is_file():
                errors.append(f"{where}: {config}: no such file")
    return errors


def code_reads(name: str, _cache: dict[str, str] = {}) -> bool:  # noqa: B006 - a deliberate cache
    if "text" not in _cache:
        _cache["text"] = "\n".join(p.read_text() for d in ("platform", "trainers")
                                   for p in (ROOT / d).rglob("*.py"))
    return re.search(rf"\b{re.escape(name)}\b", _cache["text"]) is not None


def check_env_names(docs: dict[str, list[Any]]) -> list[str]:
    """Every variable set is one the code reads, or one Ray/AWS/MLflow/Postgres/MinIO reads."""
    errors = []
    for path, documents in docs.items():
        for doc in documents:
            for name, _ in environment(doc):
                if name not in KNOWN_ENV and not code_reads(name):
                    errors.append(f"{path}: {name}: read neither by the code nor by Ray/AWS/MLflow/Postgres")
    return errors


def check_secrets(docs: dict[str, list[Any]]) -> list[str]:
    """No secret value inline: secret-named keys hold a reference, ${VAR} or a REPLACE_ME placeholder."""
    errors = []
    for path, documents in docs.items():
        for doc in documents:
            # Keys that look like names (a file_mounts path ending in auth_token is not a secret).
            pairs = list(environment(doc)) + [(k, v) for k, v in walk(doc)
                                              if isinstance(k, str) and re.fullmatch(r"[\w.-]+", k)]
            for name, value in pairs:
                if value is None or not isinstance(value, str | int | float):
                    continue
                value = str(value).strip()
                if SECRET_NAME.search(name) and not NOT_SECRET_NAME.search(name) and not PLACEHOLDER.match(value):
                    errors.append(f"{path}: {name}: inline secret value")
            for text in strings(doc):
                for password in INLINE_CREDENTIALS.findall(text):
                    if not PLACEHOLDER.match(password):
                        errors.append(f"{path}: credentials inline in a URI: {text.split('@')[-1]}")
    return errors


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (CPU in cores, memory in bytes)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def experiment_gpus() -> tuple[int, float]:
    """(num_workers, gpus_per_worker) of the paper runs' ray section (defaults from the config model)."""
    from dckd.config import RayConfig

    ray = RayConfig(**(yaml.safe_load(EXPERIMENT.read_text()).get("ray") or {}))
    assert ray.use_gpu
    return ray.num_workers, ray.gpus_per_worker


def check_resources(docs: dict[str, list[Any]], experiment: tuple[int, float]) -> list[str]:
    """GPU limits == requests, requests <= limits, GPU workers match the experiment's ray settings."""
    errors = []
    num_workers, gpus_per_worker = experiment
    for path, documents in docs.items():
        for doc in documents:
            for c in containers(doc):
                res = c.get("resources") or {}
                req, lim = res.get("requests") or {}, res.get("limits") or {}
                if req.get("nvidia.com/gpu") != lim.get("nvidia.com/gpu"):
                    errors.append(f"{path}: {c['name']}: GPU requests != limits")
                for kind in ("cpu", "memory"):
                    if kind in req and kind in lim and quantity(req[kind]) > quantity(lim[kind]):
                        errors.append(f"{path}: {c['name']}: {kind} request above its limit")
            if isinstance(doc, dict) and doc.get("kind") == "RayCluster":
                total = 0.0
                for group in doc["spec"].get("workerGroupSpecs", []):
                    gpus = sum(float((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0))
                               for c in containers(group))
                    declared = group.get("rayStartParams", {}).get("num-gpus")
                    if declared is not None and float(declared) != gpus:
                        errors.append(f"{path}: {group['groupName']}: num-gpus {declared} != GPU limit {gpus}")
                    if gpus and gpus % gpus_per_worker:
                        errors.append(f"{path}: {group['groupName']}: {gpus} GPUs per pod do not hold "
                                      f"whole Train workers of {gpus_per_worker} GPU")
                    if not group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]:
                        errors.append(f"{path}: {group['groupName']}: replicas outside min/max")
                    total += gpus * group["replicas"]
                if total != num_workers * gpus_per_worker:
                    errors.append(f"{path}: {total:g} worker GPUs, the experiment needs "
                                  f"{num_workers} x {gpus_per_worker:g}")
            if isinstance(doc, dict) and "available_node_types" in doc:
                total = sum(float(t.get("resources", {}).get("GPU", 0)) * t.get("min_workers", 0)
                            for n, t in doc["available_node_types"].items() if n != doc["head_node_type"])
                if total != num_workers * gpus_per_worker:
                    errors.append(f"{path}: {total:g} worker GPUs, the experiment needs "
                                  f"{num_workers} x {gpus_per_worker:g}")
                for line in doc.get("worker_start_ray_commands", []):
                    m = re.search(r"--num-gpus[= ](\S+)", line)
                    gpu_types = {float(t.get("resources", {}).get("GPU", 0))
                                 for n, t in doc["available_node_types"].items() if n != doc["head_node_type"]}
                    if m and gpu_types != {float(m.group(1))}:
                        errors.append(f"{path}: ray start --num-gpus {m.group(1)} != node type GPUs {gpu_types}")
    return errors


def check_dockerfile(text: str, where: str = "Dockerfile") -> list[str]:
    """Base images pinned (a tag that is not latest, or a digest), a final non-root USER, no secrets."""
    errors = []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    if not froms:
        errors.append(f"{where}: no FROM")
    for image in froms:
        last = image.split("/")[-1]
        if "@sha256:" not in image and (":" not in last or last.endswith(":latest") or "$" in image):
            errors.append(f"{where}: base image {image} is not pinned")
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        errors.append(f"{where}: does not end as a non-root USER")
    for ln in lines:
        if re.match(r"^(ENV|ARG)\s", ln, re.I) and SECRET_NAME.search(ln):
            errors.append(f"{where}: secret-looking ENV/ARG: {ln}")
    return errors


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def docs() -> dict[str, list[Any]]:
    return load_documents()


def texts_of(docs: dict[str, list[Any]]) -> dict[str, str]:
    """Every string in the documents (entrypoints, commands), plus the guide."""
    texts = {path: "\n".join(s for doc in documents for s in strings(doc)) for path, documents in docs.items()}
    texts[str(GUIDE.relative_to(ROOT))] = GUIDE.read_text()
    return texts


def find(docs: dict[str, list[Any]], path: str, kind: str | None = None) -> Any:
    for doc in docs[path]:
        if kind is None or doc.get("kind") == kind:
            return doc
    raise KeyError((path, kind))


# --------------------------------------------------------------------------- the real files
def test_every_expected_file_parses(docs):
    expected = {"infra/kuberay/raycluster.yaml", "infra/kuberay/rayjob-table2.yaml", "infra/kuberay/config.yaml",
                "infra/cluster-launcher/aws-gpu.yaml", "infra/mlflow/deployment.yaml",
                "infra/compose/docker-compose.yaml"}
    assert expected <= set(docs)
    assert all(docs[p] for p in expected)
    kinds = {doc.get("kind") for documents in docs.values() for doc in documents}
    assert {"RayCluster", "RayJob", "ConfigMap", "Secret", "Deployment", "Service"} <= kinds
    assert (ROOT / ".dockerignore").is_file() and (INFRA / "compose" / ".env.example").is_file()


def test_images(docs):
    assert check_images(docs) == []


def test_entrypoints_and_config_paths(docs):
    texts = texts_of(docs)
    assert check_entrypoints(texts) == []
    assert "trainers.reproduce table2_rcan_x4" in texts["infra/kuberay/rayjob-table2.yaml"]


def test_environment_names(docs):
    assert check_env_names(docs) == []


def test_no_inline_secrets(docs):
    assert check_secrets(docs) == []
    env_example = (INFRA / "compose" / ".env.example").read_text()
    for line in env_example.splitlines():
        if line and not line.startswith("#"):
            assert line.split("=", 1)[1] == "REPLACE_ME", line


def test_resources(docs):
    assert experiment_gpus() == (4, 1.0)
    assert check_resources(docs, experiment_gpus()) == []


def test_dockerfiles():
    for path in DOCKERFILES.values():
        assert check_dockerfile(path.read_text(), path.name) == []
    ray = DOCKERFILES["dckd-ray"].read_text()
    assert "FROM rayproject/ray:2.60.0-" in ray  # the Ray pinned in pyproject.toml
    assert "torch==2.14.1 torchvision==0.29.1" in ray
    assert "mlflow==3.17.2" in DOCKERFILES["dckd-mlflow"].read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "runs", "data", "weights", ".git"} <= set(ignored)


def test_ray_token_auth_and_private_dashboard(docs):
    cluster = find(docs, "infra/kuberay/raycluster.yaml", "RayCluster")
    for c in containers(cluster):
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "dckd-secrets"
    assert cluster["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP"
               for documents in docs.values() for d in documents if d.get("kind") == "Service")
    compose = find(docs, "infra/compose/docker-compose.yaml")
    for service in compose["services"].values():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))


def test_guide_is_linked_and_marks_cluster_commands():
    assert "docs/cluster.md" in (ROOT / "README.md").read_text()
    guide = GUIDE.read_text()
    for needed in ("make demo", "ray job submit", "ray.num_workers=", "FailureConfig", "storage_path"):
        assert needed in guide, needed
    assert "[needs a cluster]" in guide


def test_compose_config_with_docker():
    if shutil.which("docker") is None:
        pytest.skip("no docker binary")
    env = INFRA / "compose" / ".env.example"
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"docker compose unusable here: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"the docker compose plugin is not installed: {probe.stderr.strip()[:80]}")
    try:
        proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env), "config", "-q"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"docker compose unusable here: {exc}")
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- planted mistakes
def test_catches_a_wrong_entrypoint_module(docs):
    planted = copy.deepcopy(docs)
    job = find(planted, "infra/kuberay/rayjob-table2.yaml", "RayJob")
    job["spec"]["entrypoint"] = job["spec"]["entrypoint"].replace("trainers.reproduce", "trainers.reproduction")
    errors = check_entrypoints(texts_of(planted))
    assert any("trainers.reproduction: no such module" in e for e in errors), errors


def test_catches_a_missing_table_and_config_path():
    errors = check_entrypoints({"x": "python -m trainers.reproduce table9_nope\n"
                                     "python -m trainers.train experiments/paper/rcan_x5.yaml"})
    assert len(errors) == 2, errors


def test_catches_inline_secrets(docs):
    planted = copy.deepcopy(docs)
    find(planted, "infra/kuberay/config.yaml", "Secret")["stringData"]["AWS_SECRET_ACCESS_KEY"] = "abcd1234xyz"
    worker = next(containers(find(planted, "infra/kuberay/raycluster.yaml", "RayCluster")["spec"]
                             ["workerGroupSpecs"][0]))
    worker["env"].append({"name": "RAY_AUTH_TOKEN", "value": "s3cr3t"})
    compose = find(planted, "infra/compose/docker-compose.yaml")
    compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    compose["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"] = "postgresql://u:hunter2@db/m"
    launcher = find(planted, "infra/cluster-launcher/aws-gpu.yaml")
    launcher["docker"]["run_options"].append("-e AWS_SECRET_ACCESS_KEY=abcd")
    errors = check_secrets(planted)
    for needle in ("config.yaml: AWS_SECRET_ACCESS_KEY", "raycluster.yaml: RAY_AUTH_TOKEN",
                   "docker-compose.yaml: POSTGRES_PASSWORD", "credentials inline in a URI",
                   "aws-gpu.yaml: AWS_SECRET_ACCESS_KEY"):
        assert any(needle in e for e in errors), (needle, errors)


def test_catches_gpu_mismatches(docs):
    planted = copy.deepcopy(docs)
    group = find(planted, "infra/kuberay/raycluster.yaml", "RayCluster")["spec"]["workerGroupSpecs"][0]
    next(containers(group))["resources"]["limits"]["nvidia.com/gpu"] = "2"
    errors = check_resources(planted, experiment_gpus())
    assert any("GPU requests != limits" in e for e in errors), errors
    assert any("num-gpus 1 != GPU limit 2" in e for e in errors), errors

    planted = copy.deepcopy(docs)
    find(planted, "infra/kuberay/raycluster.yaml", "RayCluster")["spec"]["workerGroupSpecs"][0]["replicas"] = 3
    find(planted, "infra/cluster-launcher/aws-gpu.yaml")["available_node_types"]["gpu_worker"]["min_workers"] = 2
    errors = check_resources(planted, experiment_gpus())
    assert sum("the experiment needs 4 x 1" in e for e in errors) == 2, errors
    assert check_resources(docs, (8, 1.0)) != []  # --set ray.num_workers=8 needs a bigger cluster


def test_catches_cpu_request_above_limit(docs):
    planted = copy.deepcopy(docs)
    mlflow = next(containers(find(planted, "infra/mlflow/deployment.yaml", "Deployment")))
    mlflow["resources"]["requests"]["memory"] = "8Gi"
    assert any("memory request above its limit" in e for e in check_resources(planted, experiment_gpus()))


def test_catches_unknown_env_and_unofficial_images(docs):
    planted = copy.deepcopy(docs)
    find(planted, "infra/kuberay/config.yaml", "ConfigMap")["data"]["DCKD_DATA_DIR"] = "/data"
    compose = find(planted, "infra/compose/docker-compose.yaml")
    compose["services"]["minio"]["image"] = "minio/minio:latest"
    compose["services"]["ray-worker"]["image"] = "dckd-ray:latest"
    assert any("DCKD_DATA_DIR" in e for e in check_env_names(planted))
    errors = check_images(planted)
    assert any("minio/minio:latest: not pinned" in e for e in errors), errors
    assert any("dckd-ray:latest" in e for e in errors), errors


def test_dockerfile_check_catches_mistakes():
    assert check_dockerfile("FROM python:latest\nUSER app\n")
    assert check_dockerfile("FROM python\nUSER app\n")
    assert check_dockerfile("FROM python:3.11.11-slim\nRUN true\n")
    assert check_dockerfile("FROM python:3.11.11-slim\nUSER app\nUSER root\n")
    assert check_dockerfile("FROM python:3.11.11-slim\nENV AWS_SECRET_ACCESS_KEY=x\nUSER app\n")
    assert check_dockerfile("FROM python:3.11.11-slim\nUSER app\n") == []
