"""Every call clara-wf makes to the Kubernetes API, through the official ``kubernetes`` client.

``import kubernetes`` costs a few hundred milliseconds, so this module imports it only
inside functions: importing ``clara_wf.kube`` is free and commands that never talk to a
cluster never pay for it.

What is here:

* ``load_api_client`` / ``probe``: kubeconfig (optionally a named context) or in-cluster
  configuration; a probe that answers within ~2 s whether the current context answers.
* ``Kube``: one namespace of one cluster. Pull secret (``nvcr.io``) get / create /
  replace, Deployment readiness wait (fails fast on image-pull errors), and
  ``watch_job``: the Job's pod and the Job itself are watched (``Watch`` streams that are
  re-listed and resumed after ``410 Gone``), container statuses become ``StageUpdate``
  events, each container's log is followed in its own thread once it starts, image-pull
  and container-config errors end the run at once naming the image, and an overall
  timeout bounds it all.

Errors are raised as ``ClusterError`` with one line for the user. The NGC API key is
never part of a message, a log line or a repr: API error texts that pass through here
are scrubbed of it (and of its base64 forms) before they go into an exception.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from clara_wf.errors import ClusterError, InputError
from clara_wf.events import (
    DONE,
    FAILED,
    RUNNING,
    WAITING,
    Event,
    Info,
    JobOutcome,
    LogLine,
    StageUpdate,
    ignore,
)

PULL_SECRET_NAME = "nvcr.io"
REGISTRY = "nvcr.io"
REGISTRY_USER = "$oauthtoken"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"

# Waiting reasons that will not get better by waiting: the run ends at once.
FATAL_WAITING_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName", "ErrImageNeverPull"}
)
IMAGE_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})

PROBE_TIMEOUT = 2.0
# Each watch request asks the server to end it after this many seconds; it is then resumed
# from the last resourceVersion. Keeps a silently dead connection from blocking forever.
WATCH_SERVER_TIMEOUT = 60
CONNECT_TIMEOUT = 10.0
# After the pod ended, how long to wait for the Job's own condition before trusting the pod.
JOB_CONDITION_GRACE = 15.0
# After the run ended, how long to wait for the log streams to deliver their last lines.
LOG_DRAIN_TIMEOUT = 10.0
# A stage may print nothing for a long time; the log stream must not time out meanwhile.
LOG_READ_TIMEOUT = 24 * 3600.0


# --------------------------------------------------------------------------- secrets


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dockerconfigjson(key: str, *, registry: str = REGISTRY, username: str = REGISTRY_USER) -> str:
    """The ``.dockerconfigjson`` value (base64) of a registry pull secret for ``registry``."""
    auth = _b64(f"{username}:{key}".encode())
    doc = {"auths": {registry: {"username": username, "password": key, "auth": auth}}}
    return _b64(json.dumps(doc, separators=(",", ":")).encode())


class _Redactor:
    """Removes a secret and the encodings it travels in from any text."""

    def __init__(self, secret: Optional[str]) -> None:
        self._needles: List[str] = []
        if secret:
            self._needles = [
                dockerconfigjson(secret),
                _b64(f"{REGISTRY_USER}:{secret}".encode()),
                _b64(secret.encode()),
                json.dumps(secret)[1:-1],
                secret,
            ]

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle:
                text = text.replace(needle, "***")
        return text


def validate_key(key: str) -> str:
    """The NGC API key as pasted, stripped; an InputError when it cannot be one."""
    key = (key or "").strip()
    if not key:
        raise InputError("the NGC API key is empty; get one at https://ngc.nvidia.com/configuration/api-key")
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise InputError("the NGC API key contains spaces or control characters; paste it again")
    return key


# --------------------------------------------------------------------------- config


def _kubeconfig_path(kubeconfig: Optional[str]) -> str:
    # kubernetes.config reads $KUBECONFIG once, when it is imported; read it now instead.
    return kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def _kubeconfig_exists(path: str) -> bool:
    return any(p and os.path.exists(os.path.expanduser(p)) for p in path.split(os.pathsep))


def load_configuration(kube_context: Optional[str] = None, *, kubeconfig: Optional[str] = None) -> Any:
    """A ``kubernetes.client.Configuration`` from the kubeconfig (with ``kube_context``) or in-cluster."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    path = _kubeconfig_path(kubeconfig)
    if not _kubeconfig_exists(path):
        if kube_context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(client_configuration=cfg)
                return cfg
            except ConfigException as exc:
                raise ClusterError(f"in-cluster Kubernetes configuration is unusable: {exc}") from None
        raise ClusterError(
            f"no Kubernetes configuration: {path} does not exist; set KUBECONFIG to your cluster's kubeconfig"
        )
    try:
        config.load_kube_config(config_file=path, context=kube_context, client_configuration=cfg, persist_config=False)
    except ConfigException as exc:
        where = f"context {kube_context!r} in {path}" if kube_context else path
        raise ClusterError(f"cannot use the Kubernetes configuration ({where}): {_one_line(str(exc))}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, _yaml_error()) as exc:
        # a malformed kubeconfig can make the loader fail in many shapes
        raise ClusterError(f"cannot read the Kubernetes configuration {path}: {_one_line(str(exc)) or type(exc).__name__}") from None
    return cfg


def _yaml_error() -> "type[Exception]":
    """PyYAML's base error (the kubeconfig loader parses with it); a kubeconfig that is not YAML."""
    import yaml

    return yaml.YAMLError


def load_api_client(kube_context: Optional[str] = None, *, kubeconfig: Optional[str] = None, retries: Any = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``kube_context`` (or the current context / in-cluster)."""
    from kubernetes import client

    cfg = load_configuration(kube_context, kubeconfig=kubeconfig)
    if retries is not None:
        cfg.retries = retries
    return client.ApiClient(cfg)


def probe(kube_context: Optional[str] = None, *, kubeconfig: Optional[str] = None, timeout: float = PROBE_TIMEOUT) -> Tuple[bool, str]:
    """Does the (current) context answer? ``(True, "<host> answers (Kubernetes vX)")`` or ``(False, reason)``.

    Never raises and never takes much longer than ``timeout`` seconds: the work runs in a
    daemon thread (kubeconfig exec plugins can be slow) and the request has no retries.
    """
    result: List[Tuple[bool, str]] = []

    def attempt() -> None:
        try:
            api_client = load_api_client(kube_context, kubeconfig=kubeconfig, retries=False)
        except ClusterError as exc:
            result.append((False, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - a probe reports, it does not raise
            result.append((False, f"cannot load the Kubernetes configuration: {type(exc).__name__}"))
            return
        host = api_client.configuration.host
        try:
            from kubernetes import client

            # raw answer: only "does it answer" matters, not whether every field validates
            resp: Any = client.VersionApi(api_client).get_code(_preload_content=False, _request_timeout=(timeout, timeout))
            try:
                version = json.loads(resp.data or b"{}").get("gitVersion") or "version unknown"
            except (ValueError, AttributeError):
                version = "version unknown"
            result.append((True, f"{host} answers (Kubernetes {version})"))
        except Exception as exc:  # noqa: BLE001
            result.append((False, f"{host} does not answer: {_describe_exception(exc)}"))
        finally:
            api_client.close()

    thread = threading.Thread(target=attempt, name="clara-wf-kube-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.25)
    if not result:
        return False, f"the Kubernetes API did not answer within {timeout:g} s"
    return result[0]


# --------------------------------------------------------------------------- errors


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _api_message(exc: Any) -> str:
    """The server's own one-line message from an ApiException (its Status ``message``)."""
    body = getattr(exc, "body", None)
    if body:
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and doc.get("message"):
                return _one_line(doc["message"])
        except (ValueError, TypeError):
            pass
    return _one_line(getattr(exc, "reason", "") or "")


def _describe_exception(exc: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        msg = _api_message(exc)
        return f"HTTP {exc.status}" + (f": {msg}" if msg else "")
    # urllib3 wraps the useful part (connection refused, timed out) deep inside
    reason = getattr(exc, "reason", None)
    text = str(reason) if reason else str(exc)
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text or "NameResolution" in text:
        return "host name does not resolve"
    return _one_line(text)[:200] or type(exc).__name__


def _is_transport_error(exc: BaseException) -> bool:
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError))


# --------------------------------------------------------------------------- Kube


@dataclass
class _ContainerLog:
    thread: threading.Thread
    stop: threading.Event
    holder: Dict[str, Any]


class Kube:
    """One namespace of one cluster, through the official client."""

    def __init__(
        self,
        namespace: str = "default",
        kube_context: Optional[str] = None,
        *,
        kubeconfig: Optional[str] = None,
        api_client: Any = None,
    ) -> None:
        self.namespace = namespace
        self.kube_context = kube_context
        self._api_client = api_client if api_client is not None else load_api_client(kube_context, kubeconfig=kubeconfig)
        from kubernetes import client

        self._client = client
        self.core = client.CoreV1Api(self._api_client)
        self.apps = client.AppsV1Api(self._api_client)
        self.batch = client.BatchV1Api(self._api_client)

    @property
    def host(self) -> str:
        return self._api_client.configuration.host

    def close(self) -> None:
        try:
            self._api_client.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "Kube":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- helpers

    @contextmanager
    def _api(self, action: str, redact: Callable[[str], str] = lambda s: s) -> Iterator[None]:
        """Turn client failures into one ClusterError line (scrubbed by ``redact``)."""
        from kubernetes.client.exceptions import ApiException

        try:
            yield
        except ApiException as exc:
            msg = redact(_api_message(exc))
            hint = ""
            if exc.status in (401, 403):
                hint = f"; check that your credentials may do this in namespace {self.namespace!r}"
            elif exc.status == 404 and "namespaces" in msg and "not found" in msg:
                hint = f"; create the namespace (kubectl create namespace {self.namespace}) or pass another --namespace"
            raise ClusterError(f"cannot {action}: HTTP {exc.status}" + (f" {msg}" if msg else "") + hint) from None
        except Exception as exc:  # noqa: BLE001
            if not _is_transport_error(exc):
                raise
            raise ClusterError(
                f"cannot {action}: the Kubernetes API at {self.host} did not answer ({redact(_describe_exception(exc))}); "
                "check KUBECONFIG / --kube-context"
            ) from None

    # ----------------------------------------------------------------- secrets

    def read_secret(self, name: str = PULL_SECRET_NAME) -> Optional[Any]:
        """The V1Secret ``name`` or None when there is none."""
        from kubernetes.client.exceptions import ApiException

        with self._api(f"read secret {name!r} in namespace {self.namespace!r}"):
            try:
                return self.core.read_namespaced_secret(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def secret_exists(self, name: str = PULL_SECRET_NAME) -> bool:
        return self.read_secret(name) is not None

    def apply_pull_secret(self, key: str, name: str = PULL_SECRET_NAME) -> str:
        """Create or replace the docker-registry secret for nvcr.io; returns "created" or "replaced"."""
        from kubernetes.client.exceptions import ApiException

        key = validate_key(key)
        redact = _Redactor(key)
        client = self._client
        body = client.V1Secret(
            api_version="v1",
            kind="Secret",
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=self.namespace,
                labels={"app.kubernetes.io/managed-by": "clara-wf"},
            ),
            type=SECRET_TYPE,
            data={".dockerconfigjson": dockerconfigjson(key)},
        )
        existing = self.read_secret(name)
        with self._api(f"write secret {name!r} in namespace {self.namespace!r}", redact):
            if existing is None:
                try:
                    self.core.create_namespaced_secret(self.namespace, body, _request_timeout=(CONNECT_TIMEOUT, 30))
                    return "created"
                except ApiException as exc:
                    if exc.status != 409:  # someone else created it meanwhile: replace it
                        raise
            elif existing.type != SECRET_TYPE:
                # the type of a secret cannot change in place
                self.core.delete_namespaced_secret(name, self.namespace, _request_timeout=(CONNECT_TIMEOUT, 30))
                self.core.create_namespaced_secret(self.namespace, body, _request_timeout=(CONNECT_TIMEOUT, 30))
                return "replaced"
            self.core.replace_namespaced_secret(name, self.namespace, body, _request_timeout=(CONNECT_TIMEOUT, 30))
            return "replaced"

    # ----------------------------------------------------------------- deployments

    def wait_deployment_ready(
        self,
        name: str,
        *,
        timeout: float,
        on_event: Callable[[Event], None] = ignore,
        poll: float = 1.0,
        what: Optional[str] = None,
    ) -> None:
        """Wait until Deployment ``name`` has all replicas updated, ready and available.

        Raises ``ClusterError`` at once when one of its pods cannot pull its image, and
        after ``timeout`` seconds otherwise, with the last state seen.
        """
        from kubernetes.client.exceptions import ApiException

        what = what or f"deployment {name}"
        deadline = time.monotonic() + timeout
        last_state = "not created yet"
        reported = ""
        while True:
            with self._api(f"read {what} in namespace {self.namespace!r}"):
                try:
                    dep: Any = self.apps.read_namespaced_deployment(name, self.namespace, _request_timeout=(CONNECT_TIMEOUT, 30))
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    dep = None
            if dep is not None:
                want = dep.spec.replicas if dep.spec.replicas is not None else 1
                st = dep.status
                ready = st.ready_replicas or 0
                observed = (st.observed_generation or 0) >= (dep.metadata.generation or 0)
                if observed and (st.updated_replicas or 0) >= want and ready >= want and (st.available_replicas or 0) >= want:
                    return
                last_state = f"{ready}/{want} replicas ready"
                selector = (dep.spec.selector.match_labels or {}) if dep.spec.selector else {}
                if selector:
                    pod_state = self._check_deployment_pods(selector, what)
                    if pod_state:
                        last_state += f", {pod_state}"
            if last_state != reported:
                on_event(Info(f"waiting for {what}: {last_state}"))
                reported = last_state
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{what} is not ready after {timeout:g} s ({last_state}); "
                    f"see kubectl -n {self.namespace} describe deployment {name}"
                )
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def _check_deployment_pods(self, match_labels: Dict[str, str], what: str) -> str:
        selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
        with self._api(f"list the pods of {what}"):
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=(CONNECT_TIMEOUT, 30))
        state = ""
        pod: Any
        for pod in pods.items:
            images = {c.name: c.image for c in (pod.spec.containers or [])} if pod.spec else {}
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                waiting = cs.state.waiting if cs.state else None
                if waiting is None:
                    continue
                reason = waiting.reason or ""
                image = images.get(cs.name) or cs.image or "?"
                if reason in FATAL_WAITING_REASONS:
                    raise ClusterError(_fatal_message(what, cs.name, image, reason, waiting.message or ""))
                state = f"pod {pod.metadata.name} {reason or 'waiting'}"
        return state

    # ----------------------------------------------------------------- job watch

    def watch_job(
        self,
        job_name: str,
        *,
        stages: Optional[List[str]] = None,
        timeout: float,
        on_event: Callable[[Event], None] = ignore,
        stream_logs: bool = True,
        watch_server_timeout: int = WATCH_SERVER_TIMEOUT,
        job_condition_grace: float = JOB_CONDITION_GRACE,
        log_drain_timeout: float = LOG_DRAIN_TIMEOUT,
    ) -> JobOutcome:
        """Follow Job ``job_name`` to its end; report stages and logs through ``on_event``.

        ``on_event`` is called only from this thread. Returns a ``JobOutcome``; raises
        ``ClusterError`` when the API cannot be used at all.
        """
        return _JobWatch(
            self,
            job_name,
            stages=stages,
            timeout=timeout,
            on_event=on_event,
            stream_logs=stream_logs,
            watch_server_timeout=watch_server_timeout,
            job_condition_grace=job_condition_grace,
            log_drain_timeout=log_drain_timeout,
        ).run()


def _fatal_message(owner: str, container: str, image: str, reason: str, detail: str) -> str:
    detail = _one_line(detail)
    if len(detail) > 300:
        detail = detail[:297] + "..."
    if reason in IMAGE_REASONS:
        if reason == "ErrImageNeverPull":
            todo = "load the image on the node (imagePullPolicy is Never)"
        elif image.startswith(REGISTRY + "/"):
            todo = "check the image name and run `clara-wf setkey` if the nvcr.io key is missing or wrong"
        else:
            todo = "check the image name, build it with --build on a node-local docker or push it to a registry the cluster can reach"
        what = f"image {image} cannot be pulled ({reason}"
    else:
        todo = "check the secrets and config maps the container refers to"
        what = f"container of image {image} cannot be created ({reason}"
    return f"{owner}: stage {container}: {what}{': ' + detail if detail else ''}); {todo}"


class _Watcher(threading.Thread):
    """Lists then watches one kind of object, forever resuming; puts what it sees on a queue.

    Items put: ("list", kind, [objects]), ("event", kind, type, object), ("info", text),
    ("error", kind, text). A 410 Gone (expired resourceVersion) leads to a fresh list and a
    watch from the list's resourceVersion.
    """

    MAX_FAILURES = 5

    def __init__(self, kind: str, list_fn: Callable[..., Any], namespace: str, selector: Dict[str, str],
                 out: "queue.Queue[tuple]", stop: threading.Event, server_timeout: int) -> None:
        super().__init__(name=f"clara-wf-watch-{kind}", daemon=True)
        self.kind = kind
        self.list_fn = list_fn
        self.namespace = namespace
        self.selector = selector
        self.out = out
        self.stop_event = stop
        self.server_timeout = server_timeout
        self._watch: Any = None
        self.restarts_after_gone = 0

    def stop(self) -> None:
        self.stop_event.set()
        if self._watch is not None:
            self._watch.stop()

    def run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        rv: Optional[str] = None
        failures = 0
        while not self.stop_event.is_set():
            try:
                if rv is None:
                    listing = self.list_fn(self.namespace, _request_timeout=(CONNECT_TIMEOUT, 30), **self.selector)
                    rv = listing.metadata.resource_version
                    self.out.put(("list", self.kind, list(listing.items or [])))
                w = watch.Watch()
                self._watch = w
                if self.stop_event.is_set():
                    return
                for event in w.stream(
                    self.list_fn,
                    self.namespace,
                    resource_version=rv,
                    timeout_seconds=self.server_timeout,
                    allow_watch_bookmarks=True,
                    _request_timeout=(CONNECT_TIMEOUT, self.server_timeout + 30),
                    **self.selector,
                ):
                    if self.stop_event.is_set():
                        w.stop()
                        break
                    if event["type"] == "BOOKMARK":
                        rv = w.resource_version or rv
                        continue
                    obj = event["object"]
                    meta = getattr(obj, "metadata", None)
                    if meta is not None and meta.resource_version:
                        rv = meta.resource_version
                    self.out.put(("event", self.kind, event["type"], obj))
                failures = 0
            except ApiException as exc:
                if self.stop_event.is_set():
                    return
                if exc.status == 410:
                    self.restarts_after_gone += 1
                    self.out.put(("info", f"the {self.kind} watch expired (410 Gone); listed again and resumed"))
                    rv = None
                    continue
                failures += 1
                if exc.status in (401, 403, 404) or failures >= self.MAX_FAILURES:
                    self.out.put(("error", self.kind, _describe_exception(exc)))
                    return
                self.stop_event.wait(min(2.0 ** failures * 0.25, 5.0))
            except Exception as exc:  # noqa: BLE001
                if self.stop_event.is_set():
                    return
                if not _is_transport_error(exc):
                    self.out.put(("error", self.kind, f"{type(exc).__name__}: {_one_line(str(exc))[:200]}"))
                    return
                failures += 1
                if failures >= self.MAX_FAILURES:
                    self.out.put(("error", self.kind, _describe_exception(exc)))
                    return
                self.stop_event.wait(min(2.0 ** failures * 0.25, 5.0))


def _shutdown_response(resp: Any) -> None:
    """Unblock a thread reading ``resp`` (a urllib3 response) from another thread."""
    import socket

    try:
        conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001
        pass
    try:
        resp.close()
    except Exception:  # noqa: BLE001
        pass


def _iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            line, buffer = buffer[:cut], buffer[cut + 1:]
            yield line.decode("utf-8", errors="replace").rstrip("\r")
    if buffer:
        yield buffer.decode("utf-8", errors="replace").rstrip("\r")


def _follow_log(core: Any, namespace: str, pod: str, container: str, out: "queue.Queue[tuple]",
                stop: threading.Event, holder: Dict[str, Any]) -> None:
    """Follow one container's log, line by line, onto ``out``; tolerant of a container not started yet."""
    from kubernetes.client.exceptions import ApiException

    failures = 0
    while not stop.is_set():
        try:
            resp = core.read_namespaced_pod_log(
                pod, namespace, container=container, follow=True,
                _preload_content=False, _request_timeout=(CONNECT_TIMEOUT, LOG_READ_TIMEOUT),
            )
        except ApiException as exc:
            # 400 "container ... is waiting to start" / "ContainerCreating": try again shortly
            failures += 1
            if exc.status == 400 and failures < 600:
                stop.wait(0.5)
                continue
            if not stop.is_set():
                out.put(("loginfo", container, f"the log of stage {container} is not available ({_describe_exception(exc)})"))
            break
        except Exception as exc:  # noqa: BLE001
            failures += 1
            if _is_transport_error(exc) and failures < 5 and not stop.is_set():
                stop.wait(0.5)
                continue
            if not stop.is_set():
                out.put(("loginfo", container, f"the log of stage {container} is not available ({_describe_exception(exc)})"))
            break
        holder["resp"] = resp
        try:
            for line in _iter_lines(resp.stream(amt=None, decode_content=True)):
                out.put(("log", container, line))
        except Exception as exc:  # noqa: BLE001
            if not stop.is_set():
                out.put(("loginfo", container, f"the log of stage {container} was cut ({_describe_exception(exc)})"))
        finally:
            holder.pop("resp", None)
            try:
                resp.release_conn()
            except Exception:  # noqa: BLE001
                pass
        break
    out.put(("logend", container, pod))


def _job_state(job: Any) -> Optional[Tuple[bool, str]]:
    """(succeeded, message) once the Job has a terminal condition, else None."""
    status = getattr(job, "status", None)
    if status is None:
        return None
    for cond in status.conditions or []:
        if str(cond.status) != "True":
            continue
        if cond.type in ("Complete", "SuccessCriteriaMet"):
            return True, "the Job completed"
        if cond.type in ("Failed", "FailureTarget"):
            detail = ": ".join(x for x in (cond.reason, _one_line(cond.message or "")) if x)
            return False, "the Job failed" + (f" ({detail})" if detail else "")
    return None


class _JobWatch:
    def __init__(self, kube: Kube, job_name: str, *, stages: Optional[List[str]], timeout: float,
                 on_event: Callable[[Event], None], stream_logs: bool, watch_server_timeout: int,
                 job_condition_grace: float, log_drain_timeout: float) -> None:
        self.kube = kube
        self.job_name = job_name
        self.stage_order: List[str] = list(stages or [])
        self.fixed_stages = bool(stages)
        self.timeout = timeout
        self.on_event = on_event
        self.stream_logs = stream_logs
        self.watch_server_timeout = watch_server_timeout
        self.job_condition_grace = job_condition_grace
        self.log_drain_timeout = log_drain_timeout
        self.q: "queue.Queue[tuple]" = queue.Queue()
        self.stop = threading.Event()
        self.pods: Dict[str, Any] = {}
        self.current_pod: Optional[str] = None
        self.states: Dict[str, StageUpdate] = {}
        self.logs: Dict[Tuple[str, str], _ContainerLog] = {}
        self.failed_stage: Optional[str] = None
        self.infos_sent: set = set()

    # --------------------------------------------------------------- plumbing

    def _info(self, text: str, once: bool = True) -> None:
        if once and text in self.infos_sent:
            return
        self.infos_sent.add(text)
        self.on_event(Info(text))

    def _emit_stage(self, update: StageUpdate) -> None:
        if self.states.get(update.stage) == update:
            return
        if update.stage not in self.stage_order:
            self.stage_order.append(update.stage)
        self.states[update.stage] = update
        if update.state == FAILED and self.failed_stage is None:
            self.failed_stage = update.stage
        self.on_event(update)

    def _start_log(self, pod: str, container: str) -> None:
        if not self.stream_logs or (pod, container) in self.logs:
            return
        stop = threading.Event()
        holder: Dict[str, Any] = {}
        thread = threading.Thread(
            target=_follow_log,
            args=(self.kube.core, self.kube.namespace, pod, container, self.q, stop, holder),
            name=f"clara-wf-log-{container}",
            daemon=True,
        )
        self.logs[(pod, container)] = _ContainerLog(thread, stop, holder)
        thread.start()

    def _stop_logs(self) -> None:
        for log in self.logs.values():
            log.stop.set()
            resp = log.holder.get("resp")
            if resp is not None:
                _shutdown_response(resp)

    # --------------------------------------------------------------- pods

    def _pick_current_pod(self) -> None:
        live = [p for p in self.pods.values() if p is not None]
        if not live:
            self.current_pod = None
            return

        def created(p: Any) -> Any:
            ts = p.metadata.creation_timestamp
            return (ts.timestamp() if ts is not None else 0.0, p.metadata.name)

        self.current_pod = max(live, key=created).metadata.name

    def _on_pod(self, pod: Any) -> Optional[Tuple[bool, str]]:
        """Turn a pod's container statuses into stage events; a fail-fast outcome or None."""
        name = pod.metadata.name
        images = {c.name: c.image for c in (pod.spec.containers or [])} if pod.spec else {}
        if not self.fixed_stages:
            for c in images:
                if c not in self.stage_order:
                    self.stage_order.append(c)
        statuses = {cs.name: cs for cs in ((pod.status.container_statuses or []) if pod.status else [])}
        phase = (pod.status.phase if pod.status else None) or "Pending"
        pending_detail = "pod " + phase
        for cond in (pod.status.conditions or []) if pod.status else []:
            if cond.type == "PodScheduled" and str(cond.status) == "False" and cond.reason:
                pending_detail = f"{cond.reason}: {_one_line(cond.message or '')}".rstrip(": ")
                self._info(f"pod {name} is not scheduled yet ({pending_detail})")
        for stage in self.stage_order:
            if stage not in images:
                continue
            cs = statuses.get(stage)
            image = images.get(stage) or (cs.image if cs else "?")
            if cs is None or cs.state is None:
                self._emit_stage(StageUpdate(stage, WAITING, pending_detail))
                continue
            st = cs.state
            if st.terminated is not None:
                code = st.terminated.exit_code
                if code == 0:
                    self._emit_stage(StageUpdate(stage, DONE, st.terminated.reason or "Completed", 0))
                else:
                    detail = f"{st.terminated.reason or 'Error'} (exit code {code})"
                    if st.terminated.message:
                        detail += f": {_one_line(st.terminated.message)[:200]}"
                    self._emit_stage(StageUpdate(stage, FAILED, detail, code))
                self._start_log(name, stage)
            elif st.running is not None:
                self._emit_stage(StageUpdate(stage, RUNNING, "running"))
                self._start_log(name, stage)
            else:
                waiting = st.waiting
                reason = (waiting.reason if waiting else "") or "waiting"
                message = (waiting.message if waiting else "") or ""
                if reason in FATAL_WAITING_REASONS:
                    text = _fatal_message(f"job {self.job_name}", stage, image, reason, message)
                    self._emit_stage(StageUpdate(stage, FAILED, f"{reason}: image {image}"))
                    self.failed_stage = stage
                    return False, text
                self._emit_stage(StageUpdate(stage, WAITING, reason))
        return None

    # --------------------------------------------------------------- main loop

    def run(self) -> JobOutcome:
        kube = self.kube
        if self.stage_order:
            for stage in self.stage_order:
                self._emit_stage(StageUpdate(stage, WAITING, "pod not created yet"))
        watchers = [
            _Watcher("pod", kube.core.list_namespaced_pod, kube.namespace,
                     {"label_selector": f"job-name={self.job_name}"}, self.q, self.stop, self.watch_server_timeout),
            _Watcher("job", kube.batch.list_namespaced_job, kube.namespace,
                     {"field_selector": f"metadata.name={self.job_name}"}, self.q, self.stop, self.watch_server_timeout),
        ]
        for w in watchers:
            w.start()
        start = time.monotonic()
        deadline = start + self.timeout
        pod_ended_at: Optional[float] = None
        result: Optional[Tuple[bool, str]] = None
        timed_out = False
        try:
            while result is None:
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                wait = deadline - now
                if pod_ended_at is not None:
                    wait = min(wait, max(0.0, pod_ended_at + self.job_condition_grace - now))
                try:
                    item = self.q.get(timeout=min(wait, 1.0) if wait > 0 else 0.01)
                except queue.Empty:
                    item = None
                if item is not None:
                    result = self._handle(item)
                    if result is not None:
                        break
                # the pod ended but the Job shows no condition (yet): trust the pod after a grace
                cur = self.pods.get(self.current_pod) if self.current_pod else None
                phase = cur.status.phase if cur is not None and cur.status else None
                if phase in ("Succeeded", "Failed"):
                    pod_ended_at = pod_ended_at or time.monotonic()
                    if time.monotonic() - pod_ended_at >= self.job_condition_grace:
                        result = (phase == "Succeeded", f"the pod {self.current_pod} {phase.lower()}")
                else:
                    pod_ended_at = None
            if timed_out:
                running = [s for s in self.stage_order if self.states.get(s) and self.states[s].state in (WAITING, RUNNING)]
                where = f" (still {self.states[running[0]].state}: {', '.join(running)})" if running else ""
                result = (False, f"job {self.job_name} did not finish within {self.timeout:g} s{where}; "
                                 "pass a larger --timeout or look at the stage logs")
        except BaseException:
            # Ctrl-C, a ClusterError or a failing on_event: stop everything, report nothing more
            for w in watchers:
                w.stop()
            self._stop_logs()
            raise
        for w in watchers:
            w.stop()
        succeeded = bool(result and result[0])
        self._refresh_current_pod()
        if not succeeded or timed_out:
            self._stop_logs()
        self._drain_logs()
        self._stop_logs()
        assert result is not None
        succeeded, message = result
        if not succeeded and self.failed_stage is None:
            failed = [s for s, u in self.states.items() if u.state == FAILED]
            self.failed_stage = failed[0] if failed else None
        if succeeded:
            message = f"job {self.job_name} succeeded"
        elif self.failed_stage and "stage" not in message:
            upd = self.states[self.failed_stage]
            message = f"{message}; stage {self.failed_stage} failed ({upd.detail})"
        return JobOutcome(
            succeeded=succeeded,
            stages={s: self.states[s] for s in self.stage_order if s in self.states},
            failed_stage=None if succeeded else self.failed_stage,
            message=message,
            timed_out=timed_out,
            job_name=self.job_name,
        )

    def _handle(self, item: tuple) -> Optional[Tuple[bool, str]]:
        tag = item[0]
        if tag == "log":
            self.on_event(LogLine(item[1], item[2]))
        elif tag == "loginfo":
            self._info(item[2])
        elif tag == "logend":
            pass
        elif tag == "info":
            self._info(item[1], once=False)
        elif tag == "error":
            raise ClusterError(
                f"cannot watch the {item[1]} of job {self.job_name} in namespace {self.kube.namespace!r}: {item[2]}"
            )
        elif tag == "list":
            kind, objs = item[1], item[2]
            if kind == "pod":
                self.pods = {p.metadata.name: p for p in objs}
                self._pick_current_pod()
                return self._on_current_pod()
            if not objs:
                return False, (f"job {self.job_name} does not exist in namespace {self.kube.namespace!r} "
                               "(deleted, or the release created no Job)")
            for job in objs:
                state = _job_state(job)
                if state is not None:
                    return state
        elif tag == "event":
            kind, etype, obj = item[1], item[2], item[3]
            if kind == "pod":
                if etype == "DELETED":
                    self.pods.pop(obj.metadata.name, None)
                else:
                    self.pods[obj.metadata.name] = obj
                self._pick_current_pod()
                if etype == "DELETED" and obj.metadata.name != self.current_pod:
                    return None
                return self._on_current_pod()
            if etype == "DELETED":
                return False, f"job {self.job_name} was deleted while it ran"
            return _job_state(obj)
        return None

    def _on_current_pod(self) -> Optional[Tuple[bool, str]]:
        if self.current_pod is None:
            return None
        return self._on_pod(self.pods[self.current_pod])

    def _refresh_current_pod(self) -> None:
        """Read the pod once more: the Job may report its end before the pod watch shows the last states."""
        if self.current_pod is None:
            return
        try:
            pod = self.kube.core.read_namespaced_pod(self.current_pod, self.kube.namespace, _request_timeout=(CONNECT_TIMEOUT, 10))
        except Exception:  # noqa: BLE001 - best effort; the states seen so far stand
            return
        self.pods[self.current_pod] = pod
        self._on_pod(pod)

    def _drain_logs(self) -> None:
        """Deliver what the log threads still have; wait a little for their last lines."""
        deadline = time.monotonic() + self.log_drain_timeout
        while True:
            alive = [log for log in self.logs.values() if log.thread.is_alive()]
            try:
                item = self.q.get(timeout=0.05 if alive else 0.0)
            except queue.Empty:
                if not alive or time.monotonic() >= deadline:
                    break
                continue
            if item[0] in ("log", "loginfo", "info"):
                self._handle(item)
            elif item[0] in ("list", "event") and item[1] == "pod":
                # late pod updates still tell the final state of the stages
                try:
                    self._handle(item)
                except ClusterError:
                    pass


def set_ngc_api_key(namespace: str, key: str, kube_context: Optional[str] = None, *,
                    kubeconfig: Optional[str] = None) -> str:
    """`clara-wf setkey`: create or replace the ``nvcr.io`` pull secret; "created" or "replaced".

    The key goes only into the secret's body; it is never logged nor put in a message.
    """
    key = validate_key(key)  # before touching the cluster: an empty key is an input error
    with Kube(namespace, kube_context, kubeconfig=kubeconfig) as kube:
        return kube.apply_pull_secret(key)
