"""An HTTP-level fake of the Kubernetes API server, for tests of clara_wf.kube.

Not a simulator: each route answers with a scripted sequence of responses (the last one
repeats), so a test says exactly what the "server" sends and the real ``kubernetes``
client code runs against it: JSON objects, Status errors, chunked watch streams (with
``ERROR`` events such as 410 Gone) and chunked log streams. Every request is recorded
(method, path with query, headers, body) for assertions.

It listens on 127.0.0.1 only. ``write_kubeconfig`` writes a kubeconfig whose current
context points at it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import parse_qs, urlsplit

# --------------------------------------------------------------------------- responses


@dataclass
class Json:
    """A JSON answer with a status code."""

    body: Any
    status: int = 200


@dataclass
class Delay:
    """Inside a Stream: pause before the next part."""

    seconds: float


@dataclass
class Stream:
    """A chunked answer: dicts are sent as one JSON line each, str/bytes as they are.

    After the parts the stream stays open ``hold`` seconds (a watch with nothing to say),
    then ends, unless the server stops first.
    """

    parts: List[Any] = field(default_factory=list)
    status: int = 200
    content_type: str = "application/json"
    hold: float = 0.0


Response = Union[Json, Stream, Callable[["Request"], Any]]


@dataclass
class Request:
    method: str
    path: str  # with the query string, as sent
    route_path: str  # without the query string
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode()) if self.body else None

    def param(self, name: str) -> Optional[str]:
        values = self.query.get(name)
        return values[0] if values else None


# --------------------------------------------------------------------------- API shapes


def status(code: int, message: str, reason: str = "") -> Dict[str, Any]:
    reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               409: "AlreadyExists", 410: "Expired", 422: "Invalid", 500: "InternalError"}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason or reasons.get(code, ""), "code": code}


def error(code: int, message: str, reason: str = "") -> Json:
    return Json(status(code, message, reason), code)


def event(type_: str, obj: Dict[str, Any]) -> Dict[str, Any]:
    return {"type": type_, "object": obj}


def gone_event(message: str = "too old resource version: 1 (42)") -> Dict[str, Any]:
    return {"type": "ERROR", "object": status(410, message, "Expired")}


def listing(kind: str, items: List[Dict[str, Any]], rv: str = "100") -> Dict[str, Any]:
    api = "batch/v1" if kind.startswith("Job") else ("apps/v1" if kind.startswith("Deployment") else "v1")
    return {"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": rv}, "items": items}


def cs_waiting(name: str, image: str, reason: str = "ContainerCreating", message: str = "") -> Dict[str, Any]:
    st: Dict[str, Any] = {"reason": reason}
    if message:
        st["message"] = message
    return {"name": name, "image": image, "imageID": "", "ready": False, "restartCount": 0, "state": {"waiting": st}}


def cs_running(name: str, image: str) -> Dict[str, Any]:
    return {"name": name, "image": image, "imageID": "x", "ready": True, "restartCount": 0, "started": True,
            "state": {"running": {"startedAt": "2024-01-01T00:00:01Z"}}}


def cs_terminated(name: str, image: str, exit_code: int = 0, reason: str = "") -> Dict[str, Any]:
    return {"name": name, "image": image, "imageID": "x", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                                     "startedAt": "2024-01-01T00:00:01Z", "finishedAt": "2024-01-01T00:00:02Z"}}}


def pod(name: str, containers: Dict[str, str], statuses: Optional[List[Dict[str, Any]]] = None, *,
        phase: str = "Pending", rv: str = "101", job: str = "", created: str = "2024-01-01T00:00:00Z",
        conditions: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """A Pod; ``containers`` maps container name to image."""
    labels = {"job-name": job} if job else {}
    st: Dict[str, Any] = {"phase": phase}
    if statuses is not None:
        st["containerStatuses"] = statuses
    if conditions is not None:
        st["conditions"] = conditions
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv, "labels": labels,
                     "creationTimestamp": created},
        "spec": {"containers": [{"name": n, "image": i} for n, i in containers.items()], "restartPolicy": "Never"},
        "status": st,
    }


def job(name: str, *, condition: Optional[str] = None, reason: str = "", message: str = "", rv: str = "102") -> Dict[str, Any]:
    st: Dict[str, Any] = {}
    if condition:
        st["conditions"] = [{"type": condition, "status": "True", "reason": reason, "message": message,
                             "lastProbeTime": None, "lastTransitionTime": "2024-01-01T00:00:03Z"}]
    return {"kind": "Job", "apiVersion": "batch/v1",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
            "spec": {"template": {"spec": {"containers": []}}}, "status": st}


def deployment(name: str, *, replicas: int = 1, ready: int = 0, generation: int = 1,
               labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    labels = labels or {"app.kubernetes.io/name": "trtis", "app.kubernetes.io/instance": name}
    return {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": "default", "generation": generation, "resourceVersion": "5"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "trtis", "image": "x"}]}}},
        "status": {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": ready,
                   "readyReplicas": ready, "availableReplicas": ready},
    }


# --------------------------------------------------------------------------- server


class FakeKubeAPI:
    """``with FakeKubeAPI() as api: api.route("GET", r"/version", Json({...})) ...``"""

    def __init__(self) -> None:
        self.routes: List[Dict[str, Any]] = []
        self.requests: List[Request] = []
        self.secrets: Optional[Dict[str, Dict[str, Any]]] = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.route("GET", r"/version/?", Json({
            "major": "1", "minor": "30", "gitVersion": "v1.30.0-fake", "gitCommit": "0" * 40, "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"}))

    # ----------------------------------------------------------------- scripting

    def route(self, method: str, pattern: str, *responses: Response) -> "FakeKubeAPI":
        """Answer ``method`` on paths fully matching ``pattern`` with ``responses`` in turn (the last repeats).

        Later routes win over earlier ones for the same path.
        """
        with self._lock:
            self.routes.insert(0, {"method": method, "re": re.compile(pattern), "responses": list(responses), "n": 0})
        return self

    def serve_secrets(self, namespace: str = "default", initial: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
        """A small stateful secrets store (GET/POST/PUT/DELETE) in ``namespace``."""
        self.secrets = dict(initial or {})
        base = rf"/api/v1/namespaces/{re.escape(namespace)}/secrets"

        def get(req: Request) -> Json:
            name = req.route_path.rsplit("/", 1)[1]
            if name in self.secrets:
                return Json(self.secrets[name])
            return error(404, f'secrets "{name}" not found')

        def create(req: Request) -> Json:
            body = req.json()
            name = body["metadata"]["name"]
            if name in self.secrets:
                return error(409, f'secrets "{name}" already exists')
            body["metadata"]["resourceVersion"] = "1"
            self.secrets[name] = body
            return Json(body, 201)

        def replace(req: Request) -> Json:
            body = req.json()
            name = req.route_path.rsplit("/", 1)[1]
            if name not in self.secrets:
                return error(404, f'secrets "{name}" not found')
            if body.get("type") != self.secrets[name].get("type"):
                return error(422, f'Secret "{name}" is invalid: type: Invalid value: field is immutable')
            self.secrets[name] = body
            return Json(body)

        def delete(req: Request) -> Json:
            name = req.route_path.rsplit("/", 1)[1]
            if self.secrets.pop(name, None) is None:
                return error(404, f'secrets "{name}" not found')
            return Json(status(200, "") | {"status": "Success"})

        self.route("GET", base + r"/[^/]+", get)
        self.route("POST", base, create)
        self.route("PUT", base + r"/[^/]+", replace)
        self.route("DELETE", base + r"/[^/]+", delete)
        return self.secrets

    def requests_to(self, method: str, pattern: str) -> List[Request]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.fullmatch(r.route_path)]

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeKubeAPI":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                req = Request(self.command, self.path, split.path, parse_qs(split.query, keep_blank_values=True),
                              {k: v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(req)
                    response: Any = None
                    for r in fake.routes:
                        if r["method"] == self.command and r["re"].fullmatch(split.path):
                            i = min(r["n"], len(r["responses"]) - 1)
                            r["n"] += 1
                            response = r["responses"][i]
                            break
                if response is None:
                    response = error(404, f"fake API: no route for {self.command} {split.path}")
                while callable(response):
                    response = response(req)
                try:
                    if isinstance(response, Json):
                        self._send_json(response)
                    else:
                        self._send_stream(response)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

            def _send_json(self, resp: Json) -> None:
                data = json.dumps(resp.body).encode()
                self.send_response(resp.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send_stream(self, resp: Stream) -> None:
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for part in resp.parts:
                    if isinstance(part, Delay):
                        if fake._stopped.wait(part.seconds):
                            break
                        continue
                    if isinstance(part, dict):
                        data = (json.dumps(part) + "\n").encode()
                    elif isinstance(part, str):
                        data = part.encode()
                    else:
                        data = bytes(part)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                if resp.hold:
                    fake._stopped.wait(resp.hold)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeKubeAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----------------------------------------------------------------- kubeconfig

    def write_kubeconfig(self, path: Path, *, context: str = "fake", namespace: str = "default") -> Path:
        """A kubeconfig (JSON is YAML) whose current context ``context`` points at this server."""
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": context, "preferences": {},
            "clusters": [{"name": "fake-cluster", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": "fake-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake-cluster", "user": "fake-user", "namespace": namespace}}],
        }
        path = Path(path)
        path.write_text(json.dumps(doc, indent=1))
        return path


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def script_job_run(
    api: FakeKubeAPI,
    job_name: str,
    containers: Dict[str, str],
    frames: List[tuple],
    *,
    final: Optional[str] = "Complete",
    final_reason: str = "",
    final_message: str = "",
    logs: Optional[Dict[str, List[str]]] = None,
    pod_name: str = "",
    namespace: str = "default",
    step: float = 0.15,
    job_delay: Optional[float] = None,
) -> str:
    """Script one Job run: the pod passes through ``frames`` ([(statuses, phase)]), the Job ends with ``final``.

    The pod list shows the first frame, the pod watch streams the others ``step`` apart,
    the Job watch sends the ``final`` condition after all frames (or after ``job_delay``),
    each container's log route streams its lines. Returns the pod name.
    """
    pod_name = pod_name or f"{job_name}-x7k2p"
    ns = re.escape(namespace)
    first, *rest = frames
    pods = [pod(pod_name, containers, st, phase=ph, job=job_name, rv=str(200 + i)) for i, (st, ph) in enumerate(frames)]
    watch_parts: List[Any] = []
    for p in pods[1:]:
        watch_parts += [Delay(step), event("MODIFIED", p)]

    def pods_route(req: Request) -> Any:
        if req.param("watch") is None:
            return Json(listing("PodList", [pods[0]], "199"))
        if req.param("resourceVersion") == "199":
            return Stream(watch_parts, hold=30)
        return Stream([], hold=30)

    def jobs_route(req: Request) -> Any:
        if req.param("watch") is None:
            return Json(listing("JobList", [job(job_name, rv="300")], "300"))
        if req.param("resourceVersion") == "300" and final:
            delay = job_delay if job_delay is not None else step * (len(frames) + 1)
            return Stream([Delay(delay), event("MODIFIED", job(job_name, condition=final, reason=final_reason,
                                                                message=final_message, rv="301"))], hold=30)
        return Stream([], hold=30)

    api.route("GET", rf"/api/v1/namespaces/{ns}/pods", pods_route)
    api.route("GET", rf"/apis/batch/v1/namespaces/{ns}/jobs", jobs_route)
    api.route("GET", rf"/api/v1/namespaces/{ns}/pods/{re.escape(pod_name)}", Json(pods[-1]))
    logs = logs or {}

    def log_route(req: Request) -> Any:
        lines = logs.get(req.param("container") or "", [])
        parts: List[Any] = []
        for line in lines:
            parts += [line + "\n", Delay(0.02)]
        return Stream(parts, content_type="text/plain")

    api.route("GET", rf"/api/v1/namespaces/{ns}/pods/{re.escape(pod_name)}/log", log_route)
    return pod_name
