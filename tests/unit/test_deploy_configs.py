"""The production deployment files in deploy/, validated offline (no database, no cluster).

* Both Dagster instance files pass Dagster's own instance schema; every configurable class in them
  validates against that class's config schema (the K8sRunLauncher block against
  ``dagster_k8s.K8sRunLauncher.config_type()``); the single-VM file builds a real DagsterInstance
  once its storage is swapped for SQLite.
* The Helm values map to the same instance settings as deploy/k8s/dagster.yaml, and the tag limits
  everywhere equal the development instance's.
* Kubernetes manifests are checked field by field against the Kubernetes API models shipped with
  dagster-k8s, then against our rules: selectors, probes on real API routes, resources,
  placeholder-only secrets, settings names that exist.
* process-compose and systemd start real entry points; ``systemd-analyze verify`` accepts the units
  where it works.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
INSTANCE_FILES = {"vm": DEPLOY / "dagster.yaml", "k8s": DEPLOY / "k8s" / "dagster.yaml"}
DUMMY_STORAGE_URL = "postgresql+psycopg2://dagster:dummy@127.0.0.1:5432/dagster"
#: environment variables the deployment sets that are not AuditFlow settings
EXTRA_ENV = {"AUDITFLOW_DAGSTER_STORAGE_URL", "DAGSTER_HOME", "PYTHONUNBUFFERED"}
PLACEHOLDER = re.compile(r"REPLACE_ME(?:_[A-Z]+)*")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests() -> list[dict[str, Any]]:
    return documents(DEPLOY / "k8s" / "api.yaml") + documents(DEPLOY / "k8s" / "secret.template.yaml")


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def only_placeholders(value: str) -> bool:
    """``REPLACE_ME…`` alone, or a PostgreSQL URL whose user, password and host are placeholders."""
    if PLACEHOLDER.fullmatch(value):
        return True
    rest = PLACEHOLDER.sub("", value)
    url_shape = re.fullmatch(r"postgresql(\+psycopg2)?://:@:5432/[a-z_]+", rest)
    return bool(PLACEHOLDER.search(value)) and url_shape is not None


def settings_env_names() -> tuple[set[str], set[str]]:
    """(every environment variable Settings reads, those that hold secrets)."""
    from pydantic import SecretStr

    from auditflow_dagster.settings import Settings

    names: set[str] = set()
    secret: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        aliases = set(getattr(field.validation_alias, "choices", []) or [])
        names |= aliases
        if field.annotation is SecretStr or field_name in ("database_url", "dagster_pg_url"):
            secret |= aliases
    return names, secret


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
            pairs[key.strip()] = value.strip()
    return pairs


# --- every file ------------------------------------------------------------------------------


def test_every_yaml_in_deploy_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 6, files
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert any(d is not None for d in docs), f"{path}: empty"
        assert all(isinstance(d, dict) for d in docs if d is not None), f"{path}: a document is not a mapping"


# --- Dagster instance files ------------------------------------------------------------------


@pytest.fixture()
def storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITFLOW_DAGSTER_STORAGE_URL", DUMMY_STORAGE_URL)


def instance_config(path: Path) -> dict[str, Any]:
    """Dagster's own loader: YAML → instance schema validation (raises on any schema error)."""
    from dagster._core.instance.config import dagster_instance_config

    config, custom_class = dagster_instance_config(str(path.parent), config_filename=path.name)
    assert custom_class is None
    return dict(config)


def validate_class_config(block: dict[str, Any]) -> None:
    """A ``module``/``class``/``config`` block against that class's own config schema."""
    from dagster._config import process_config
    from dagster._serdes.config_class import ConfigurableClassData

    if block["class"] == "K8sRunLauncher":
        # Instantiating it needs a cluster; its schema does not.
        from dagster_k8s import K8sRunLauncher

        assert getattr(importlib.import_module(block["module"]), block["class"]) is K8sRunLauncher
        result = process_config(K8sRunLauncher.config_type(), block.get("config", {}))
        assert result.success, [e.message for e in result.errors]
        return
    ConfigurableClassData(block["module"], block["class"], yaml.safe_dump(block.get("config") or {})).rehydrate()


@pytest.mark.parametrize("name", sorted(INSTANCE_FILES))
def test_instance_file_passes_dagsters_schema(name: str, storage_env: None) -> None:
    from dagster._config import process_config
    from dagster._core.storage.config import pg_config

    config = instance_config(INSTANCE_FILES[name])
    storage = config["storage"]["postgres"]
    assert storage["postgres_url"] == {"env": "AUDITFLOW_DAGSTER_STORAGE_URL"}  # no secret in the file
    resolved = process_config(pg_config(), storage)
    assert resolved.success and resolved.value["postgres_url"] == DUMMY_STORAGE_URL
    for key in ("run_coordinator", "run_launcher", "compute_logs"):
        if key in config:
            validate_class_config(config[key])
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0
    assert monitoring["max_resume_run_attempts"] == 0  # a dead run is failed, then retried
    for kind in ("sensor", "schedule"):
        assert set(config["retention"][kind]["purge_after_days"]) == {"skipped", "success", "failure", "started"}
    assert config["telemetry"] == {"enabled": False}


def test_vm_instance_builds_a_real_instance(tmp_path: Path, storage_env: None) -> None:
    """Everything but the storage (needs a server) instantiated by Dagster itself."""
    from dagster import DagsterInstance
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.scheduler.instigation import TickStatus

    config = load(INSTANCE_FILES["vm"])
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 4
        assert len(queue.tag_concurrency_limits) == 3
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 18000  # = AUTOMATION_STALE_THRESHOLD_MS
        sensor_retention = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert sensor_retention[TickStatus.SKIPPED] == 1 and sensor_retention[TickStatus.FAILURE] == 30
    finally:
        instance.dispose()


def test_tag_limits_match_the_development_instance() -> None:
    dev = load(REPO / "dagster.yaml")["run_coordinator"]["config"]
    queued = load(DEPLOY / "k8s" / "values.yaml")["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    for path in INSTANCE_FILES.values():
        prod = load(path)["run_coordinator"]["config"]
        assert prod["tag_concurrency_limits"] == dev["tag_concurrency_limits"], path
        assert prod["dequeue_interval_seconds"] == dev["dequeue_interval_seconds"], path
    assert queued["tagConcurrencyLimits"] == dev["tag_concurrency_limits"]
    assert queued["dequeueIntervalSeconds"] == dev["dequeue_interval_seconds"]
    keys = {limit["key"] for limit in dev["tag_concurrency_limits"]}
    assert {"auditflow/rerun_audit_id", "automation/schedule_id", "automation/run_id"} <= keys


def test_crash_recovery_matches_the_development_instance() -> None:
    """The development instance (``auditflow stack``/demo, the e2e and crash tests) retries crashed
    runs and monitors runs exactly as production does (tests/e2e/test_crash_safety.py relies on it)."""
    dev = load(REPO / "dagster.yaml")
    prod = load(INSTANCE_FILES["vm"])
    assert dev["run_retries"] == prod["run_retries"]
    assert dev["run_monitoring"] == prod["run_monitoring"]


# --- Kubernetes: Helm values ↔ instance file ---------------------------------------------------


RELEASE, NAMESPACE = "auditflow", "auditflow"


def helm_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The instance settings the Dagster chart renders from our values (its configmap-instance
    template and helpers/instance/*.tpl), written as dagster.yaml keys."""
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = daemon["runMonitoring"]
    retries = daemon["runRetries"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = launcher.get("runK8sConfig", {})
    pg = values["postgresql"]
    postgres_db = {"postgres_db": {
        "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"],
        "params": pg["postgresqlParams"], "scheme": pg["postgresqlScheme"]}}
    fullname = f"{RELEASE}-dagster"
    return {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": postgres_db},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": postgres_db},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": postgres_db},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator", "config": {
            "max_concurrent_runs": queued["maxConcurrentRuns"],
            "tag_concurrency_limits": queued["tagConcurrencyLimits"],
            "dequeue_interval_seconds": queued["dequeueIntervalSeconds"]}},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "load_incluster_config": launcher["loadInclusterConfig"],
            "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
            "image_pull_policy": launcher["imagePullPolicy"],
            "service_account_name": fullname,
            "dagster_home": values["global"]["dagsterHome"],
            "instance_config_map": f"{fullname}-instance",
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "env_config_maps": [c["name"] for c in launcher.get("envConfigMaps", [])],
            "env_secrets": [s["name"] for s in launcher.get("envSecrets", [])],
            "labels": launcher.get("labels", {}),
            "resources": launcher["resources"],
            "run_k8s_config": {
                "pod_template_spec_metadata": run_k8s.get("podTemplateSpecMetadata", {}),
                "job_spec_config": run_k8s.get("jobSpecConfig", {})}}},
        "compute_logs": {"module": "dagster.core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
        if values["computeLogManager"]["type"] == "NoOpComputeLogManager" else None,
        "run_monitoring": {
            "enabled": monitoring["enabled"], "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"]},
        "run_retries": {"enabled": retries["enabled"], "max_retries": retries["maxRetries"],
                        "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"]},
        "sensors": {"use_threads": daemon["sensors"]["useThreads"], "num_workers": daemon["sensors"]["numWorkers"]},
        "schedules": {"use_threads": daemon["schedules"]["useThreads"],
                      "num_workers": daemon["schedules"]["numWorkers"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        "retention": {kind: {"purge_after_days": values["retention"][kind]["purgeAfterDays"]}
                      for kind in ("schedule", "sensor")},
    }


def test_helm_values_render_the_k8s_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._config import process_config
    from dagster_postgres.run_storage import PostgresRunStorage

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "dummy")  # the chart's password variable
    values = load(DEPLOY / "k8s" / "values.yaml")
    rendered = helm_instance(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config = instance_config(tmp_path / "dagster.yaml")  # Dagster's instance schema
    validate_class_config(config["run_launcher"])
    validate_class_config(config["run_coordinator"])
    validate_class_config(config["compute_logs"])
    storage = process_config(PostgresRunStorage.config_type(), {**rendered["run_storage"]["config"]})
    assert storage.success, [e.message for e in storage.errors]
    assert storage.value["postgres_db"]["scheme"] == "postgresql+psycopg2"

    reference = load(INSTANCE_FILES["k8s"])
    for key in ("run_coordinator", "run_retries", "retention", "telemetry", "sensors", "schedules", "compute_logs"):
        assert rendered[key] == reference[key], key
    monitoring = dict(rendered["run_monitoring"])
    assert monitoring.pop("free_slots_after_run_end_seconds") == 0  # off: no Dagster pools
    assert monitoring == reference["run_monitoring"]
    ours = dict(rendered["run_launcher"]["config"])
    assert ours.pop("postgres_password_secret") == values["global"]["postgresqlSecretName"]
    assert ours == reference["run_launcher"]["config"]


def test_helm_values_wire_our_image_database_and_settings() -> None:
    import dagster

    values = load(DEPLOY / "k8s" / "values.yaml")
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"  # DESIGN §3.2
    assert values["generatePostgresqlPasswordSecret"] is False
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert values[component]["image"]["tag"] == dagster.__version__, component  # chart = Dagster version
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("--module-name") + 1]
    workspace = load(REPO / "workspace.yaml")["load_from"][0]["python_module"]["module_name"]
    assert module == workspace and importlib.util.find_spec(module) is not None
    image = f'{deployment["image"]["repository"]}:{deployment["image"]["tag"]}'
    (api,) = of_kind("Deployment")
    assert image == api["spec"]["template"]["spec"]["containers"][0]["image"], "code location and API: one image"
    assert not image.endswith(":latest")
    # the Secrets and ConfigMap they reference are the ones we ship
    config_maps = {d["metadata"]["name"] for d in of_kind("ConfigMap")}
    secrets = {d["metadata"]["name"]: d for d in of_kind("Secret")}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for holder in (deployment, launcher):
        assert {c["name"] for c in holder["envConfigMaps"]} <= config_maps
        assert {s["name"] for s in holder["envSecrets"]} <= set(secrets)
    pg_secret = secrets[values["global"]["postgresqlSecretName"]]
    assert set(pg_secret["stringData"]) == {"postgresql-password"}
    # resource blocks and raw K8s config are valid Kubernetes objects
    for path, block in [("dagsterWebserver", values["dagsterWebserver"]["resources"]),
                        ("dagsterDaemon", values["dagsterDaemon"]["resources"]),
                        ("user deployment", deployment["resources"]), ("run launcher", launcher["resources"])]:
        assert not k8s_problems(block, "V1ResourceRequirements", path)
        assert {"cpu", "memory"} <= set(block["requests"]) and "memory" in block["limits"], path


def test_k8s_run_config_blocks_are_kubernetes_objects() -> None:
    """run_k8s_config goes through dagster-k8s's own model conversion (unknown keys raise)."""
    import kubernetes.client.models as models
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    run_k8s = load(INSTANCE_FILES["k8s"])["run_launcher"]["config"]["run_k8s_config"]
    meta = k8s_model_from_dict(models.V1ObjectMeta, k8s_snake_case_dict(models.V1ObjectMeta,
                                                                         run_k8s["pod_template_spec_metadata"]))
    assert meta.annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert k8s_snake_case_dict(models.V1JobSpec, run_k8s["job_spec_config"]) == {"ttl_seconds_after_finished": 86400}


# --- Kubernetes manifests ----------------------------------------------------------------------


API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "PodDisruptionBudget": "policy/v1",
                "ConfigMap": "v1", "Secret": "v1"}
PRIMITIVES: dict[str, Any] = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def k8s_problems(data: Any, type_name: str, path: str) -> list[str]:
    """Every key a field of the Kubernetes model (wire names), every value of the field's type."""
    import kubernetes.client.models as models

    if type_name.startswith("list["):
        if not isinstance(data, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(data) for p in k8s_problems(item, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith(("dict[", "dict(")):
        inner = type_name[5:-1].split(",", 1)[1].strip()
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping"]
        return [p for k, v in data.items() for p in k8s_problems(v, inner, f"{path}.{k}")]
    if type_name in PRIMITIVES:
        ok = isinstance(data, PRIMITIVES[type_name]) and not (type_name == "int" and isinstance(data, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {data!r}"]
    klass = getattr(models, type_name)
    if not isinstance(data, dict):
        return [f"{path}: expected a {type_name} mapping"]
    by_wire_name = {wire: attr for attr, wire in klass.attribute_map.items()}
    problems = []
    for key, value in data.items():
        attr = by_wire_name.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: not a field of {type_name}")
        else:
            problems += k8s_problems(value, klass.openapi_types[attr], f"{path}.{key}")
    return problems


def test_manifests_match_the_kubernetes_api_models() -> None:
    from kubernetes.client import ApiClient

    client = ApiClient()
    docs = manifests()
    assert {d["kind"] for d in docs} == set(API_VERSIONS)
    for doc in docs:
        name = doc.get("metadata", {}).get("name")
        assert doc.get("apiVersion") and doc.get("kind") and name, doc
        assert doc["apiVersion"] == API_VERSIONS[doc["kind"]], name
        model = f"V1{doc['kind']}"
        assert not k8s_problems(doc, model, f"{doc['kind']}/{name}")
        client._ApiClient__deserialize(doc, model)  # required fields (raises ValueError when missing)


@pytest.fixture(scope="module")
def api_app() -> Any:
    """The real Starlette app, built without a database (its start-up hooks stubbed)."""
    import auditflow_dagster.db.embedded as embedded
    import auditflow_dagster.db.migrate as migrate

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedded, "ensure_database_env", lambda: ("", ""))
        mp.setattr(migrate, "upgrade", lambda: None)
        from api.app import create_app

        return create_app("http://127.0.0.1:9/graphql")


def serves_get(app: Any, path: str) -> bool:
    from starlette.routing import Match

    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def test_api_deployment(api_app: Any) -> None:
    (deployment,) = of_kind("Deployment")
    spec = deployment["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["replicas"] == 3
    assert not serves_get(api_app, "/no/such/route")
    config_maps = {d["metadata"]["name"] for d in of_kind("ConfigMap")}
    secrets = {d["metadata"]["name"] for d in of_kind("Secret")}
    (container,) = spec["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["uvicorn", "api.app:create_app", "--factory"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(port_names["http"]) == command[command.index("--port") + 1]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http_get = container[probe]["httpGet"]
        assert serves_get(api_app, http_get["path"]), f"{probe}: {http_get['path']} is not an API route"
        assert http_get["port"] in port_names, probe
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    for source in container["envFrom"]:
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in config_maps
        else:
            assert source["secretRef"]["name"] in secrets


def test_service_and_disruption_budget_select_the_api_pods() -> None:
    (deployment,) = of_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    (service,) = of_kind("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    (pdb,) = of_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_configmap_holds_settings_and_no_secret() -> None:
    names, secret_names = settings_env_names()
    (config_map,) = of_kind("ConfigMap")
    data = config_map["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    assert set(data) <= names | EXTRA_ENV, set(data) - names - EXTRA_ENV
    assert not set(data) & (secret_names | {"AUDITFLOW_DAGSTER_STORAGE_URL"})
    assert data["AUDITFLOW_DAGSTER_GRAPHQL_URL"] == f"http://{RELEASE}-dagster-webserver/graphql"


def test_secret_template_holds_placeholders_only() -> None:
    names, secret_names = settings_env_names()
    secrets = {d["metadata"]["name"]: d for d in of_kind("Secret")}
    for name, secret in secrets.items():
        assert "data" not in secret, f"{name}: base64 data could hide a value; use stringData placeholders"
        for key, value in secret["stringData"].items():
            assert only_placeholders(value), f"{name}.{key} is not a placeholder"
    app_secret = secrets["auditflow-secrets"]["stringData"]
    assert set(app_secret) <= secret_names | EXTRA_ENV, set(app_secret) - secret_names - EXTRA_ENV
    assert {"AUDITFLOW_DATABASE_URL", "AUDITFLOW_DAGSTER_PG_URL", "AUDITFLOW_DAGSTER_STORAGE_URL"} <= set(app_secret)
    assert app_secret["AUDITFLOW_DAGSTER_STORAGE_URL"].startswith("postgresql+psycopg2://")


def test_k8s_launcher_uses_the_shipped_configmap_and_secret() -> None:
    launcher = load(INSTANCE_FILES["k8s"])["run_launcher"]["config"]
    assert launcher["env_config_maps"] == [d["metadata"]["name"] for d in of_kind("ConfigMap")]
    assert "auditflow-secrets" in launcher["env_secrets"]
    assert "job_image" not in launcher  # the code location reports its own image


# --- single VM: process-compose and systemd ------------------------------------------------------


def venv_script(token: str) -> bool:
    return (VENV_BIN / Path(token).name).is_file()


def test_process_compose(api_app: Any) -> None:
    import dagster_webserver.webserver as webserver
    from uvicorn.importer import import_from_string

    doc = load(DEPLOY / "vm" / "process-compose.yaml")
    processes = doc["processes"]
    allowed = {"command", "depends_on", "availability", "readiness_probe", "liveness_probe", "shutdown",
               "environment", "working_dir", "description", "disabled", "is_daemon", "namespace"}
    one_shot = {"dagster-home", "migrate"}
    api_ports = []
    for name, proc in processes.items():
        assert set(proc) <= allowed, (name, set(proc) - allowed)
        command = proc["command"]
        first = command.split()[0]
        if first.startswith(".venv/bin/"):
            assert venv_script(first), f"{name}: {first} is not installed"
        restart = proc["availability"]["restart"]
        assert restart in (("no", "on_failure") if name in one_shot else ("always", "on_failure")), name
        for dep, cond in proc.get("depends_on", {}).items():
            assert dep in processes and cond["condition"] in (
                "process_completed_successfully", "process_healthy", "process_started"), (name, dep)
        for probe in ("readiness_probe", "liveness_probe"):
            if probe in proc:
                assert len({"exec", "http_get"} & set(proc[probe])) == 1, (name, probe)
        if name.startswith("api-"):
            assert "api.app:create_app --factory" in command
            port = int(re.search(r"--port (\d+)", command).group(1))
            api_ports.append(port)
            assert proc["readiness_probe"]["http_get"]["path"] == "/health/ready"
            for probe in ("readiness_probe", "liveness_probe"):
                assert proc[probe]["http_get"]["port"] == port
                assert serves_get(api_app, proc[probe]["http_get"]["path"]), (name, probe)
    assert callable(import_from_string("api.app:create_app"))
    assert len(api_ports) >= 2 and len(set(api_ports)) == len(api_ports)
    for name in ("dagster-webserver", "dagster-daemon"):
        assert "-w workspace.yaml" in processes[name]["command"] and (REPO / "workspace.yaml").is_file()
        assert processes[name]["depends_on"]["dagster-home"]["condition"] == "process_completed_successfully"
    assert "deploy/dagster.yaml" in processes["dagster-home"]["command"]
    probe_path = processes["dagster-webserver"]["readiness_probe"]["http_get"]["path"]
    assert f'Route("{probe_path}"' in inspect.getsource(webserver), "not a dagster-webserver route"
    assert processes["dagster-daemon"]["liveness_probe"]["exec"]["command"].endswith("dagster-daemon liveness-check")


SYSTEMD = DEPLOY / "vm" / "systemd"
UNITS = ["auditflow-dagster-webserver.service", "auditflow-dagster-daemon.service", "auditflow-api@.service"]
APP_DIR = "/opt/auditflow"


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_units_start_real_entry_points() -> None:
    assert sorted(p.name for p in SYSTEMD.glob("*.service")) == sorted(UNITS)
    for name in UNITS:
        service = unit(SYSTEMD / name)["Service"]
        assert service["EnvironmentFile"] == ["/etc/auditflow/auditflow.env"], name
        assert service["WorkingDirectory"] == [APP_DIR], name
        assert service["User"] != ["root"] and service["Restart"][0] in ("always", "on-failure"), name
        assert unit(SYSTEMD / name)["Install"]["WantedBy"] == ["multi-user.target"]
        (start,) = service["ExecStart"]
        executable = start.split()[0]
        assert executable.startswith(f"{APP_DIR}/.venv/bin/") and venv_script(executable), (name, executable)
        if "dagster" in name:
            assert f"-w {APP_DIR}/workspace.yaml" in start and (REPO / "workspace.yaml").is_file()
            assert any("cp deploy/dagster.yaml" in pre for pre in service["ExecStartPre"]), name
    api = unit(SYSTEMD / "auditflow-api@.service")["Service"]["ExecStart"][0]
    assert "api.app:create_app --factory" in api and "--port %i" in api


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")

    def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([analyze, "verify", "--man=no", *map(str, paths)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    probe = tmp_path / "probe.service"
    probe.write_text(f"[Service]\nExecStart={sys.executable} -c pass\n")
    if verify(probe).returncode != 0:
        pytest.skip("systemd-analyze verify does not work in this environment")
    env = tmp_path / "auditflow.env"
    env.write_text((DEPLOY / "vm" / "auditflow.env.example").read_text())
    copies = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        text = text.replace(f"{APP_DIR}/.venv/bin/", f"{VENV_BIN}/").replace(APP_DIR, str(REPO))
        text = text.replace("/etc/auditflow/auditflow.env", str(env))
        copy = tmp_path / name.replace("@.", "@8001.")  # a template is verified as an instance
        copy.write_text(text)
        copies.append(copy)
    result = verify(*copies)
    assert result.returncode == 0 and "Unknown" not in result.stderr, result.stderr


def test_vm_env_template() -> None:
    names, secret_names = settings_env_names()
    env = env_file(DEPLOY / "vm" / "auditflow.env.example")
    assert set(env) <= names | EXTRA_ENV, set(env) - names - EXTRA_ENV
    for key in secret_names & set(env):
        assert only_placeholders(env[key]), f"{key} is not a placeholder"
    assert env["AUDITFLOW_DAGSTER_STORAGE_URL"].startswith("postgresql+psycopg2://")
    assert only_placeholders(env["AUDITFLOW_DAGSTER_STORAGE_URL"])
    assert env["AUDITFLOW_AUTH"] == "on" and env["APP_ENV"] == "production"
