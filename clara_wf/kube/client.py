"""``Kube``: one namespace of one cluster through the official client (secrets, deployment
readiness, a Job's watch)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

from clara_wf.errors import ClusterError
from clara_wf.events import Event, Info, JobOutcome, ignore
from clara_wf.kube.config import CONNECT_TIMEOUT, load_api_client
from clara_wf.kube.errors import api_message, describe_exception, is_transport_error, one_line
from clara_wf.kube.secrets import PULL_SECRET_NAME, REGISTRY, SECRET_TYPE, Redactor, dockerconfigjson, validate_key
from clara_wf.kube.watch import WATCH_SERVER_TIMEOUT

# Waiting reasons that will not get better by waiting: the run ends at once.
FATAL_WAITING_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName", "ErrImageNeverPull"}
)
IMAGE_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
# After the pod ended, how long to wait for the Job's own condition before trusting the pod.
JOB_CONDITION_GRACE = 15.0
# After the run ended, how long to wait for the log streams to deliver their last lines.
LOG_DRAIN_TIMEOUT = 10.0


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
            msg = redact(api_message(exc))
            hint = ""
            if exc.status in (401, 403):
                hint = f"; check that your credentials may do this in namespace {self.namespace!r}"
            elif exc.status == 404 and "namespaces" in msg and "not found" in msg:
                hint = f"; create the namespace (kubectl create namespace {self.namespace}) or pass another --namespace"
            raise ClusterError(f"cannot {action}: HTTP {exc.status}" + (f" {msg}" if msg else "") + hint) from None
        except Exception as exc:  # noqa: BLE001
            if not is_transport_error(exc):
                raise
            raise ClusterError(
                f"cannot {action}: the Kubernetes API at {self.host} did not answer ({redact(describe_exception(exc))}); "
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
        redact = Redactor(key)
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
                    raise ClusterError(fatal_message(what, cs.name, image, reason, waiting.message or ""))
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
        from clara_wf.kube.job_watch import JobWatch

        return JobWatch(
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


def fatal_message(owner: str, container: str, image: str, reason: str, detail: str) -> str:
    detail = one_line(detail)
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
