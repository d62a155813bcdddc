"""Ray Serve on a simulated Ray cluster: the dashboard's Serve REST API and the apps' lifecycle.

When a Ray head container starts, its dashboard listens on port 8265 (`ctx.pod_ports`), where the
KubeRay operator PUTs the JSON form of `serveConfigV2` and GETs `/api/serve/applications/`, as the
real operator does. `GET /nodes?view=summary` (the dashboard's Cluster tab) reports each Ray node's
disk, which fills as the weights download: the guide's way of watching the download. Serve reads that config honestly: `import_path` must be Ray Serve LLM's
`ray.serve.llm:build_openai_app`, each `llm_configs` entry gives `model_id`, `model_source`,
`accelerator_type` and `tensor_parallel_size` x `pipeline_parallel_size` GPUs, and deployments are
named as the head image's Ray version reports them (>= 2.49: `LLMServer:<model_id>` + `OpenAiIngress`;
older: `LLMDeployment:<model_id>` + `LLMRouter`).

An LLM replica is placed once running Ray workers offer enough GPUs of the accelerator type; it then
downloads the weights (model size / per-node bandwidth, from the profile; cached per set of workers)
and starts the engine. Apps go DEPLOYING -> RUNNING; deployments UPDATING -> HEALTHY, with Serve's
"taken more than 30s to be scheduled / to initialize" messages on the way. If the workers go away,
the replica is lost and the app becomes UNHEALTHY until a new replica has loaded. Once Serve runs,
the proxy on the head (and on the worker hosting the replica) serves `rayserve_openai`.

Faults (where they show: the app/deployment statuses KubeRay copies into the RayService status):
- `deploy_failed {model_id?}`: the engine fails after the download -> app DEPLOY_FAILED, deployment
  DEPLOY_FAILED with a traceback in `message`. An unknown `model_source` fails the same way, from
  Hugging Face's 404, without any fault.
- `slow_download {factor}`: the weight download takes `factor` times longer.
- `stalled_download {at_fraction?}`: the download reaches `at_fraction` of the weights (default 0.4;
  0 = it never starts) and stops for good, as a hung connection or a rate-limited token leaves it;
  the app stays DEPLOYING, the deployment UPDATING, the worker's disk flat and its GPUs idle.

The dashboard's node summary also lists each Ray node's GPUs (`gpus`: `memoryUsed`/`memoryTotal` in
MiB, as Ray's reporter agent words them): memory rises while the engine loads the weights, jumps to
vLLM's `gpu_memory_utilization` share for the KV cache during warm-up, and stays there while serving.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from sandbox.kube.context import ClusterContext, HttpRequest, HttpResponse, PerCluster

DASHBOARD_PORT, SERVE_PORT = 8265, 8000
SERVE_API = "/api/serve/applications/"
LLM_IMPORT_PATHS = ("ray.serve.llm:build_openai_app",)
NEW_NAMES_FROM = (2, 49)   # Ray Serve LLM renamed LLMDeployment/LLMRouter (ray PR #57181 and before)
SLOW_MESSAGE_AFTER_S = 30.0  # Serve's "taken more than 30s" warnings

_registries: PerCluster[ServeRegistry] = PerCluster(lambda ctx: ServeRegistry(ctx))


def serve_registry(ctx: ClusterContext) -> ServeRegistry:
    """The Serve instances of one simulated cluster (created on first use)."""
    return _registries.get(ctx)


def forget_registry(ctx: ClusterContext) -> None:
    """Drop the cluster's Serve instances (its controllers stopped)."""
    _registries.forget(ctx)


def ray_version_of(image: str) -> tuple[int, int]:
    """`rayproject/ray-llm:2.52.0-py311-cu128` -> (2, 52); nightly or unparsable -> the newest names."""
    match = re.search(r":(\d+)\.(\d+)", image or "")
    return (int(match.group(1)), int(match.group(2))) if match else (99, 0)


def deployment_names(ray_version: tuple[int, int], model_id: str) -> tuple[str, str]:
    """(server deployment, ingress deployment) as this Ray version names them."""
    if ray_version >= NEW_NAMES_FROM:
        return f"LLMServer:{model_id}", "OpenAiIngress"
    return f"LLMDeployment:{model_id}", "LLMRouter"


class ServeRegistry:
    """Per cluster: Ray clusters' Serve instances, keyed by (namespace, RayCluster name)."""

    def __init__(self, ctx: ClusterContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._instances: dict[tuple[str, str], RayServe] = {}
        self._listeners: list[Any] = []

    def add_listener(self, kick: Any) -> None:
        self._listeners.append(kick)

    def changed(self) -> None:
        for kick in list(self._listeners):
            kick()

    def head_started(self, pod: dict[str, Any], pod_ip: str) -> None:
        meta = pod["metadata"]
        key = (meta.get("namespace"), (meta.get("labels") or {}).get("ray.io/cluster", ""))
        image = (pod["spec"]["containers"][0] or {}).get("image", "")
        instance = RayServe(self.ctx, key[0], key[1], meta["name"], ray_version_of(image))
        with self._lock:
            self._instances[key] = instance
        self.ctx.pod_ports.listen(key[0], meta["name"], DASHBOARD_PORT, instance.dashboard)
        self.changed()

    def pod_stopped(self, namespace: str, pod_name: str) -> None:
        """A Ray pod's container stopped: a head takes Serve's state with it (no GCS FT)."""
        with self._lock:
            for key, instance in list(self._instances.items()):
                if key[0] == namespace and instance.head_pod == pod_name:
                    del self._instances[key]
        self.changed()

    def instance(self, namespace: str, cluster: str) -> RayServe | None:
        with self._lock:
            return self._instances.get((namespace, cluster))

    def proxy_pods(self, namespace: str, cluster: str) -> set[str]:
        instance = self.instance(namespace, cluster)
        return instance.proxy_pods() if instance else set()

    def next_change_in(self) -> float | None:
        with self._lock:
            instances = list(self._instances.values())
        waits = [w for w in (i.next_change_in() for i in instances) if w is not None]
        return min(waits) if waits else None


@dataclass
class LlmConfig:
    model_id: str
    source: str
    accelerator: str | None
    gpus: int
    size_gb: float | None      # None: Hugging Face does not know the repository
    gpu_memory_utilization: float = 0.9   # vLLM's share of each GPU's memory (its default 0.9)
    streamed: bool = False     # vLLM streams the gs:// copy into GPU memory (load_format runai_streamer)


# ray.llm's STREAMING_LOAD_FORMATS: with one of these Ray Serve LLM skips its download of a mirror-config
# model and vLLM reads the bucket itself while it loads.
STREAMING_LOAD_FORMATS = ("runai_streamer", "runai_streamer_sharded", "tensorizer")


@dataclass
class AppRun:
    """One Serve application as deployed from one config version."""

    name: str
    config: dict[str, Any]
    deployed_at: float
    llms: list[LlmConfig] = field(default_factory=list)
    import_error: str = ""
    quick: bool = False                       # config change that keeps the running replica
    replica_at: float | None = None           # replica placed (download starts)
    replica_key: frozenset = frozenset()      # the workers (uid, restarts) it runs on
    download_s: float = 0.0
    engine_s: float = 0.0
    load_s: float = 0.0                       # of engine_s: the weights into GPU memory (then the warm-up)
    nominal_download_s: float = 0.0           # the download's length had it not stalled
    stall_fraction: float | None = None       # fault stalled_download: the share downloaded, then nothing
    node_downloads: list[Any] = field(default_factory=list)   # per worker: weights_cache.NodeDownload
    fail_message: str = ""                    # why the replica's constructor fails
    fail_at: float | None = None              # when Serve gives up on it (DEPLOY_FAILED)
    ever_running: bool = False
    lost: bool = False


class RayServe:
    """Serve on one Ray cluster: config, app statuses over time, and which pods run a proxy."""

    def __init__(self, ctx: ClusterContext, namespace: str, cluster: str, head_pod: str,
                 ray_version: tuple[int, int]):
        self.ctx, self.namespace, self.cluster, self.head_pod = ctx, namespace, cluster, head_pod
        self.ray_version = ray_version
        self._lock = threading.RLock()
        self.apps: dict[str, AppRun] = {}
        self.downloaded: set[tuple[str, frozenset]] = set()
        self.started = False
        self._handler: Any = None

    # -- the dashboard REST API -----------------------------------------------------------------
    def dashboard(self, request: HttpRequest) -> HttpResponse:
        path = request.path if request.path.endswith("/") else request.path + "/"
        if path == "/api/version/":
            return _json(200, {"version": "4", "ray_version": ".".join(map(str, self.ray_version)) + ".0",
                               "ray_commit": "0" * 40})
        if path == "/nodes/" and "view=summary" in request.query:
            from sandbox.kube import rayserve_status
            with self._lock:
                self._refresh(self.ctx.clock.elapsed_s())
                summary = rayserve_status.node_summary(self)
            return _json(200, {"result": True, "msg": "Node summary fetched.", "data": {"summary": summary}})
        if path != SERVE_API:
            return HttpResponse(404, b"404: Not Found", {"content-type": "text/plain"})
        if request.method == "GET":
            return _json(200, self.status())
        if request.method == "PUT":
            try:
                self.deploy(json.loads(request.body or b"{}"))
            except (ValueError, TypeError) as e:
                return HttpResponse(400, str(e).encode(), {"content-type": "text/plain"})
            return HttpResponse(200, b"", {"content-type": "text/plain"})
        if request.method == "DELETE":
            with self._lock:
                self.apps.clear()
            return HttpResponse(200, b"", {"content-type": "text/plain"})
        return HttpResponse(405, b"405: Method Not Allowed", {"content-type": "text/plain"})

    def deploy(self, config: dict[str, Any]) -> None:
        """Apply a Serve config (declarative: apps not listed are removed). Raises ValueError when invalid."""
        apps = config.get("applications") if isinstance(config, dict) else None
        if not isinstance(apps, list):
            raise ValueError("1 validation error for ServeDeploySchema\napplications\n  field required")
        now = self.ctx.clock.elapsed_s()
        with self._lock:
            wanted = {}
            for index, app in enumerate(apps):
                if not isinstance(app, dict) or not app.get("import_path"):
                    raise ValueError(f"1 validation error for ServeDeploySchema\napplications -> {index} -> "
                                     "import_path\n  field required (type=value_error.missing)")
                name = app.get("name") or "default"
                wanted[name] = self._app_for(name, app, now)
            self.apps = wanted
            self.started = True
            self._listen_proxies()
        serve_registry(self.ctx).changed()

    def _app_for(self, name: str, app: dict[str, Any], now: float) -> AppRun:
        current = self.apps.get(name)
        if current is not None and current.config == app:
            return current
        run = AppRun(name=name, config=app, deployed_at=now)
        if app.get("import_path") not in LLM_IMPORT_PATHS:
            run.import_error = _import_error(app.get("import_path", ""))
            return run
        run.llms = [_llm_config(c, self.ctx.profile) for c in (app.get("args") or {}).get("llm_configs") or []]
        if current is not None and current.replica_at is not None and _same_engine(current.config, app):
            # Only deployment options or routes changed: Serve reconfigures the live replica.
            run.quick, run.replica_at, run.replica_key = True, current.replica_at, current.replica_key
            run.ever_running = current.ever_running
        return run

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The body of `GET /api/serve/applications/` (Ray's ServeInstanceDetails, trimmed)."""
        now = self.ctx.clock.elapsed_s()
        with self._lock:
            self._refresh(now)
            apps = {name: self._app_status(run, now) for name, run in self.apps.items()}
        return {"controller_info": {"node_id": "0" * 56, "actor_name": "SERVE_CONTROLLER_ACTOR"},
                "proxy_location": "EveryNode", "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
                "deploy_mode": "MULTI_APP", "applications": apps}

    def _app_status(self, run: AppRun, now: float) -> dict[str, Any]:
        from sandbox.kube import rayserve_status
        return rayserve_status.app_status(self, run, now)

    def proxy_pods(self) -> set[str]:
        now = self.ctx.clock.elapsed_s()
        with self._lock:
            if not self.started:
                return set()
            self._refresh(now)
            pods = {self.head_pod}
            for run in self.apps.values():
                if run.replica_at is not None and run.replica_key:
                    pods.add(sorted(name for _, name, _ in run.replica_key)[0])
        return pods

    def next_change_in(self) -> float | None:
        from sandbox.kube import rayserve_status
        now = self.ctx.clock.elapsed_s()
        with self._lock:
            self._refresh(now)
            dues = [d for run in self.apps.values() for d in rayserve_status.due_times(self, run) if d > now]
        return min(dues) - now if dues else None

    def running_model_ids(self) -> dict[str, str]:
        """model_id -> app name for LLM apps that can answer now (RUNNING, or UNHEALTHY with a replica)."""
        now = self.ctx.clock.elapsed_s()
        with self._lock:
            self._refresh(now)
            result = {}
            for run in self.apps.values():
                state = self._app_status(run, now)["status"]
                if state == "RUNNING":
                    result.update({llm.model_id: run.name for llm in run.llms})
            return result

    def _refresh(self, now: float) -> None:
        from sandbox.kube import rayserve_status
        workers = rayserve_status.running_workers(self.ctx, self.namespace, self.cluster)
        for run in self.apps.values():
            rayserve_status.place_replica(self, run, workers, now)
        if self.started:
            self._listen_proxies()

    def _listen_proxies(self) -> None:
        """Serve runs a proxy on the head and on each node with a replica; each serves the apps."""
        from sandbox.kube import rayserve_openai
        if self._handler is None:
            self._handler = rayserve_openai.handler_for(self)
        pods = {self.head_pod} | {sorted(name for _, name, _ in run.replica_key)[0]
                                  for run in self.apps.values() if run.replica_at is not None and run.replica_key}
        for pod in pods:
            if self.ctx.pod_ports.handler(self.namespace, pod, SERVE_PORT) is None:
                self.ctx.pod_ports.listen(self.namespace, pod, SERVE_PORT, self._handler)


def _json(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode())


def _import_error(import_path: str) -> str:
    module = import_path.split(":")[0] if ":" in import_path else import_path
    return (f"Traceback (most recent call last):\n  File \"/home/ray/anaconda3/lib/python3.11/site-packages/ray/"
            f"serve/_private/application_state.py\", line 1190, in build_serve_application\n    app = "
            f"call_user_app_builder_with_args_if_necessary(import_attr(import_path), args)\n  File \"/home/ray/"
            f"anaconda3/lib/python3.11/importlib/__init__.py\", line 126, in import_module\n    return "
            f"_bootstrap._gcd_import(name[level:], package, level)\nModuleNotFoundError: No module named "
            f"'{module}'")


def _llm_config(entry: dict[str, Any], profile: dict[str, Any]) -> LlmConfig:
    loading = entry.get("model_loading_config") or {}
    engine = entry.get("engine_kwargs") or {}
    source = loading.get("model_source") or loading.get("model_id") or ""
    if isinstance(source, dict):   # Ray Serve LLM's mirror config: {bucket_uri: gs://... or s3://...}
        source = source.get("bucket_uri") or ""
    source = str(source)
    gpus = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
    return LlmConfig(model_id=str(loading.get("model_id", source)), source=source,
                     accelerator=entry.get("accelerator_type"), gpus=gpus,
                     size_gb=model_size_gb(source, profile),
                     gpu_memory_utilization=float(engine.get("gpu_memory_utilization", 0.9)),
                     streamed=engine.get("load_format") in STREAMING_LOAD_FORMATS and source.startswith("gs://"))


def model_size_gb(source: str, profile: dict[str, Any]) -> float | None:
    """Weights size of a Hugging Face repo: the profile's catalogue, else 2 bytes/parameter from a
    `...-7B...` style name; None when neither knows it (Hugging Face would answer 404)."""
    catalogue = (profile.get("kube", {}).get("models") or {})
    if source.startswith("gs://"):
        # A staged copy (flows/stage_weights.py) keeps the repo id as the object prefix's tail.
        source = next((repo for repo in catalogue if source.rstrip("/").endswith("/" + repo)), source[5:])
    if source in catalogue:
        return float(catalogue[source])
    match = re.search(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", source.split("/")[-1])
    if "/" in source and match:
        return float(match.group(1)) * 2
    return None


def _same_engine(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def engine_part(app: dict[str, Any]) -> list[Any]:
        return [{k: v for k, v in c.items() if k != "deployment_config"}
                for c in (app.get("args") or {}).get("llm_configs") or []]
    return old.get("import_path") == new.get("import_path") and engine_part(old) == engine_part(new)
