#!/usr/bin/env python3
"""End-to-end checks of wasmkube with the official Kubernetes Python client.

Run as: python test_client.py <kubeconfig>

Uses only the client's typed APIs (CoreV1Api, AppsV1Api) and its watch helper, as an
application would. Every check can fail; the first failure prints what was expected and
what came back, and the script exits 1. On success it prints one line:
`python client: N checks passed`.
"""

import faulthandler
import json
import queue
import sys
import threading
import time
import traceback
import uuid

import kubernetes
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

# The whole run takes a few seconds; if anything hangs (a watch that never ends, a request
# that never answers), dump every thread's stack and exit non-zero instead of hanging CI.
OVERALL_DEADLINE_SECONDS = 240
WATCH_DEADLINE_SECONDS = 30  # how long we wait for the expected watch events
REQUEST_TIMEOUT = (10, 60)  # (connect, read) seconds for every ordinary request


class CheckFailed(Exception):
    pass


checks_passed = 0
current_step = "start"


def step(name):
    global current_step
    current_step = name


def check(condition, message):
    global checks_passed
    if not condition:
        raise CheckFailed(message)
    checks_passed += 1


def check_eq(got, want, what):
    check(got == want, f"{what}: expected {want!r}, got {got!r}")


def status_of(exc):
    """The Kubernetes Status a failed request answered with, as a dict."""
    try:
        return json.loads(exc.body)
    except (TypeError, ValueError):
        raise CheckFailed(f"the error body is not a JSON Status: status={exc.status} body={exc.body!r}")


def expect_api_error(call, code, reason, what, name=None, kind=None):
    """Run `call`; it must raise ApiException with HTTP `code` and Status `reason`."""
    try:
        result = call()
    except ApiException as exc:
        check_eq(exc.status, code, f"{what}: HTTP status")
        status = status_of(exc)
        check_eq(status.get("kind"), "Status", f"{what}: error body kind ({status})")
        check_eq(status.get("status"), "Failure", f"{what}: Status.status ({status})")
        check_eq(status.get("reason"), reason, f"{what}: Status.reason ({status})")
        check_eq(status.get("code"), code, f"{what}: Status.code ({status})")
        details = status.get("details") or {}
        if name is not None:
            check_eq(details.get("name"), name, f"{what}: Status.details.name ({status})")
        if kind is not None:
            check_eq(details.get("kind"), kind, f"{what}: Status.details.kind ({status})")
        return status
    raise CheckFailed(f"{what}: expected ApiException {code} {reason}, but the call succeeded and returned {result!r}")


def names(items):
    return sorted(item.metadata.name for item in items)


def rv_int(rv, what):
    try:
        return int(rv)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: resourceVersion {rv!r} is not an integer")


def list_continue(meta):
    """ListMeta's continue token under either attribute name the client versions use."""
    token = getattr(meta, "_continue", None)
    if token is None:
        token = getattr(meta, "var_continue", None)
    return token


class ConfigMapWatch:
    """A watch of one namespace's ConfigMaps, read by a thread into a queue."""

    def __init__(self, v1, namespace, resource_version):
        self.events = queue.Queue()
        self.watch = watch.Watch()
        self.thread = threading.Thread(
            target=self._run, args=(v1, namespace, resource_version), name="configmap-watch", daemon=True
        )
        self.thread.start()

    def _run(self, v1, namespace, resource_version):
        try:
            for event in self.watch.stream(
                v1.list_namespaced_config_map,
                namespace,
                resource_version=resource_version,
                timeout_seconds=WATCH_DEADLINE_SECONDS * 2,
                _request_timeout=(10, WATCH_DEADLINE_SECONDS * 3),
            ):
                self.events.put(("event", event["type"], event["raw_object"]))
            self.events.put(("end", "the server ended the watch", None))
        except BaseException as exc:  # reported to the main thread, which fails the check
            self.events.put(("error", f"{type(exc).__name__}: {exc}", None))

    def collect(self, wanted_names, count, deadline_seconds):
        """Wait (on the queue, with a deadline) for `count` events about `wanted_names`."""
        seen = []
        deadline = time.monotonic() + deadline_seconds
        while len(seen) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(
                    f"watch: timed out after {deadline_seconds}s with {len(seen)} of {count} events: "
                    + describe_events(seen)
                )
            try:
                kind, event_type, obj = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if kind != "event":
                raise CheckFailed(
                    f"watch: stream stopped ({event_type}) after {len(seen)} of {count} events: "
                    + describe_events(seen)
                )
            if event_type in ("BOOKMARK",):
                continue
            name = (obj.get("metadata") or {}).get("name")
            if name in wanted_names:
                seen.append((event_type, obj))
        return seen

    def stop(self):
        self.watch.stop()
        self.thread.join(timeout=10)


def describe_events(events):
    return "[" + ", ".join(
        f"{t} {o.get('metadata', {}).get('name')}@{o.get('metadata', {}).get('resourceVersion')}" for t, o in events
    ) + "]"


def merge_patch(patch, *args, **kwargs):
    """Call a client patch function as a JSON merge patch; None if this client version
    cannot choose the patch type (older clients had no `_content_type`)."""
    try:
        return patch(*args, _content_type="application/merge-patch+json", **kwargs)
    except TypeError as exc:
        if "_content_type" not in str(exc):
            raise
        print(f"note: this client version has no _content_type ({exc}); merge patch not tried", file=sys.stderr)
        return None


def configmap(name, labels, data):
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        data=data,
    )


def run(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    api_client = client.ApiClient()
    v1 = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    t = dict(_request_timeout=REQUEST_TIMEOUT)

    ns = f"pyclient-{uuid.uuid4().hex[:10]}"

    step("create namespace")
    created_ns = v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)), **t)
    check_eq(created_ns.metadata.name, ns, "created namespace name")
    check(created_ns.metadata.uid, f"created namespace has a uid: {created_ns.metadata}")
    listed = v1.list_namespace(field_selector=f"metadata.name={ns}", **t)
    check_eq(names(listed.items), [ns], f"list namespaces with field_selector=metadata.name={ns}")
    try:
        run_in_namespace(v1, apps, ns, t)
    except BaseException:
        try:  # best-effort cleanup; the failure being reported is the one that matters
            v1.delete_namespace(ns, **t)
        except Exception:
            pass
        raise

    step("delete namespace")
    v1.delete_namespace(ns, **t)
    # A deleted namespace is either gone or terminating (it empties itself first).
    try:
        left = v1.read_namespace(ns, **t)
        check(
            left.metadata.deletion_timestamp is not None and left.status.phase == "Terminating",
            f"namespace {ns} after delete: expected Terminating with a deletionTimestamp, got "
            f"phase={left.status.phase!r} deletionTimestamp={left.metadata.deletion_timestamp!r}",
        )
    except ApiException as exc:
        check_eq(exc.status, 404, f"reading namespace {ns} after delete")


def run_in_namespace(v1, apps, ns, t):
    step("list ConfigMaps before any change")
    initial = v1.list_namespaced_config_map(ns, **t)
    list_rv = initial.metadata.resource_version
    check(list_rv, f"list of ConfigMaps has metadata.resourceVersion: {initial.metadata}")
    rv_int(list_rv, "list resourceVersion")

    step("start a watch from the list's resourceVersion")
    ours = {"web", "db", "cache"}
    cm_watch = ConfigMapWatch(v1, ns, list_rv)
    expected = []  # (type, name, object as the write answered, or None for DELETED)
    try:
        step("create three ConfigMaps")
        specs = {
            "web": ({"app": "web", "tier": "frontend"}, {"color": "blue", "size": "1"}),
            "db": ({"app": "db", "tier": "backend"}, {"engine": "pg"}),
            "cache": ({"app": "cache"}, {"ttl": "60"}),
        }
        created = {}
        for name, (labels, data) in specs.items():
            obj = v1.create_namespaced_config_map(ns, configmap(name, labels, data), **t)
            check(isinstance(obj, client.V1ConfigMap), f"create {name} returns a V1ConfigMap, got {type(obj)}")
            check_eq(obj.metadata.name, name, f"created {name}: name")
            check_eq(obj.metadata.namespace, ns, f"created {name}: namespace")
            check_eq(obj.metadata.labels, labels, f"created {name}: labels")
            check_eq(obj.data, data, f"created {name}: data")
            check(obj.metadata.uid and len(obj.metadata.uid) == 36, f"created {name}: uid {obj.metadata.uid!r}")
            check(obj.metadata.creation_timestamp is not None, f"created {name}: creationTimestamp is set")
            check(
                rv_int(obj.metadata.resource_version, f"created {name}") > rv_int(list_rv, "list"),
                f"created {name}: resourceVersion {obj.metadata.resource_version} is after the list's {list_rv}",
            )
            created[name] = obj
            expected.append(("ADDED", name, obj))

        step("create an existing name")
        expect_api_error(
            lambda: v1.create_namespaced_config_map(ns, configmap("web", {"app": "web"}, {}), **t),
            409, "AlreadyExists", "create ConfigMap web again", name="web", kind="configmaps",
        )

        step("list with label selectors")
        for selector, want in [
            ("app=web", ["web"]),
            ("app in (web,db)", ["db", "web"]),
            ("!tier", ["cache"]),
            ("tier", ["db", "web"]),
            ("app notin (web)", ["cache", "db"]),
            ("app!=cache,tier=backend", ["db"]),
            ("app=nothing", []),
        ]:
            got = v1.list_namespaced_config_map(ns, label_selector=selector, **t)
            check_eq(names(got.items), want, f"list ConfigMaps with label_selector={selector!r}")

        step("list with field selectors")
        for selector, want in [
            ("metadata.name=db", ["db"]),
            ("metadata.name!=db", ["cache", "web"]),
            (f"metadata.namespace={ns}", ["cache", "db", "web"]),
        ]:
            got = v1.list_namespaced_config_map(ns, field_selector=selector, **t)
            check_eq(names(got.items), want, f"list ConfigMaps with field_selector={selector!r}")
        got = v1.list_namespaced_config_map(ns, label_selector="app in (web,db)", field_selector="metadata.name=web", **t)
        check_eq(names(got.items), ["web"], "list with label_selector='app in (web,db)' and field_selector=metadata.name=web")

        step("get")
        web = v1.read_namespaced_config_map("web", ns, **t)
        check_eq(web.data, specs["web"][1], "get web: data")
        check_eq(web.metadata.uid, created["web"].metadata.uid, "get web: uid")
        check_eq(web.metadata.resource_version, created["web"].metadata.resource_version, "get web: resourceVersion")

        step("replace")
        web.data = {"color": "green", "size": "2"}
        replaced = v1.replace_namespaced_config_map("web", ns, web, **t)
        check_eq(replaced.data, {"color": "green", "size": "2"}, "replace web: data")
        check_eq(replaced.metadata.uid, created["web"].metadata.uid, "replace web: uid unchanged")
        check(
            rv_int(replaced.metadata.resource_version, "replace") > rv_int(web.metadata.resource_version, "get"),
            f"replace web: resourceVersion moves on from {web.metadata.resource_version}, got {replaced.metadata.resource_version}",
        )
        expected.append(("MODIFIED", "web", replaced))
        check_eq(v1.read_namespaced_config_map("web", ns, **t).data, replaced.data, "get web after replace: data")

        step("replace with a stale resourceVersion")
        stale = configmap("web", {"app": "web", "tier": "frontend"}, {"color": "red"})
        stale.metadata.resource_version = web.metadata.resource_version  # the version before the replace
        expect_api_error(
            lambda: v1.replace_namespaced_config_map("web", ns, stale, **t),
            409, "Conflict", "replace web with a stale resourceVersion", name="web", kind="configmaps",
        )

        step("strategic merge patch (the client's default for a dict body)")
        patched = v1.patch_namespaced_config_map(
            "web", ns, {"metadata": {"labels": {"patched": "smp"}}, "data": {"added": "1"}}, **t
        )
        check_eq(patched.metadata.labels, {"app": "web", "tier": "frontend", "patched": "smp"}, "SMP web: labels merged")
        check_eq(patched.data, {"color": "green", "size": "2", "added": "1"}, "SMP web: data merged")
        expected.append(("MODIFIED", "web", patched))

        step("merge patch")
        merged = merge_patch(
            v1.patch_namespaced_config_map, "web", ns,
            {"metadata": {"labels": {"patched": None}}, "data": {"added": None, "size": "3"}}, **t,
        )
        if merged is not None:
            check_eq(merged.metadata.labels, {"app": "web", "tier": "frontend"}, "merge patch web: null removes a label")
            check_eq(merged.data, {"color": "green", "size": "3"}, "merge patch web: null removes a key, a value replaces")
            expected.append(("MODIFIED", "web", merged))

        step("JSON patch (a list body)")
        json_patched = v1.patch_namespaced_config_map(
            "db", ns, [{"op": "add", "path": "/data/replicas", "value": "2"}], **t
        )
        check_eq(json_patched.data, {"engine": "pg", "replicas": "2"}, "JSON patch db: data")
        expected.append(("MODIFIED", "db", json_patched))

        step("delete")
        deleted = v1.delete_namespaced_config_map("cache", ns, **t)
        check(deleted is not None, "delete cache answers with a body")
        expected.append(("DELETED", "cache", None))
        expect_api_error(
            lambda: v1.read_namespaced_config_map("cache", ns, **t),
            404, "NotFound", "get cache after delete", name="cache", kind="configmaps",
        )
        expect_api_error(
            lambda: v1.delete_namespaced_config_map("cache", ns, **t),
            404, "NotFound", "delete cache again", name="cache", kind="configmaps",
        )
        expect_api_error(
            lambda: v1.read_namespaced_config_map("never-created", ns, **t),
            404, "NotFound", "get a ConfigMap that never existed", name="never-created", kind="configmaps",
        )
        check_eq(names(v1.list_namespaced_config_map(ns, label_selector="app", **t).items), ["db", "web"], "list after delete")

        step("watch events")
        events = cm_watch.collect(ours, len(expected), WATCH_DEADLINE_SECONDS)
        want_summary = [(typ, name) for typ, name, _ in expected]
        got_summary = [(typ, obj["metadata"]["name"]) for typ, obj in events]
        check_eq(got_summary, want_summary, "watch events (type, name) in order")
        last_rv = rv_int(list_rv, "list")
        for (typ, name, answered), (_, obj) in zip(expected, events):
            rv = rv_int(obj["metadata"].get("resourceVersion"), f"watch {typ} {name}")
            check(rv > last_rv, f"watch {typ} {name}: resourceVersion {rv} is after the previous event's {last_rv}")
            last_rv = rv
            if answered is not None:
                check_eq(
                    obj["metadata"]["resourceVersion"], answered.metadata.resource_version,
                    f"watch {typ} {name}: resourceVersion equals the write's answer",
                )
                check_eq(obj.get("data"), answered.data, f"watch {typ} {name}: data equals the write's answer")
            check_eq(obj["metadata"].get("uid"), created[name].metadata.uid, f"watch {typ} {name}: uid")
        # Nothing else about our objects may have arrived (the failed writes made no events).
        extra = []
        while True:
            try:
                kind, typ, obj = cm_watch.events.get_nowait()
            except queue.Empty:
                break
            if kind == "event" and (obj.get("metadata") or {}).get("name") in ours:
                extra.append((typ, obj))
        check(not extra, f"watch: no events beyond the expected ones, got {describe_events(extra)}")
    finally:
        cm_watch.stop()

    deployment_checks(apps, ns, t)
    paging_checks(v1, ns, t)


def deployment_checks(apps, ns, t):
    step("create a Deployment from a dict")
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
                    ]
                },
            },
        },
    }
    created = apps.create_namespaced_deployment(ns, body, **t)
    check(isinstance(created, client.V1Deployment), f"create Deployment returns a V1Deployment, got {type(created)}")
    check_eq(created.metadata.name, "web", "created Deployment: name")
    check_eq(created.spec.replicas, 1, "created Deployment: spec.replicas")
    check_eq(created.metadata.generation, 1, "created Deployment: metadata.generation")

    step("read the Deployment")
    read = apps.read_namespaced_deployment("web", ns, **t)
    check_eq(read.spec.selector.match_labels, {"app": "web"}, "read Deployment: spec.selector.matchLabels")
    check_eq(read.spec.template.metadata.labels, {"app": "web"}, "read Deployment: template labels")
    check_eq([c.image for c in read.spec.template.spec.containers], ["nginx:1.27"], "read Deployment: container images")
    check_eq(read.metadata.uid, created.metadata.uid, "read Deployment: uid")

    step("patch the scale subresource")
    scale = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}}, **t)
    check(isinstance(scale, client.V1Scale), f"patch scale returns a V1Scale, got {type(scale)}")
    check_eq(scale.spec.replicas, 3, "patch scale: spec.replicas in the answer")
    read_scale = apps.read_namespaced_deployment_scale("web", ns, **t)
    check_eq(read_scale.spec.replicas, 3, "read scale: spec.replicas")
    check_eq(read_scale.metadata.name, "web", "read scale: metadata.name")
    check_eq(read_scale.status.selector, "app=web", "read scale: status.selector")
    after = apps.read_namespaced_deployment("web", ns, **t)
    check_eq(after.spec.replicas, 3, "read Deployment after scale: spec.replicas")
    check_eq(after.metadata.generation, 2, "read Deployment after scale: generation moved on")

    step("strategic merge patch of a list with a merge key")
    # SMP merges containers by name: only the image changes, the ports stay, and a new
    # name is added beside the old one.
    smp = apps.patch_namespaced_deployment(
        "web", ns,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.28"},
            {"name": "sidecar", "image": "busybox:1.36"},
        ]}}}},
        **t,
    )
    containers = {c.name: c for c in smp.spec.template.spec.containers}
    check_eq(sorted(containers), ["nginx", "sidecar"], "SMP Deployment: containers merged by name")
    check_eq(containers["nginx"].image, "nginx:1.28", "SMP Deployment: nginx image")
    check_eq(
        [p.container_port for p in (containers["nginx"].ports or [])], [80],
        "SMP Deployment: nginx keeps its ports (merged, not replaced)",
    )
    check_eq(smp.spec.replicas, 3, "SMP Deployment: replicas untouched")

    step("merge patch of the same list")
    merged = merge_patch(
        apps.patch_namespaced_deployment, "web", ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.29"}]}}}}, **t,
    )
    if merged is not None:
        check_eq(
            [(c.name, c.image, c.ports) for c in merged.spec.template.spec.containers],
            [("nginx", "nginx:1.29", None)],
            "merge patch Deployment: the containers list is replaced whole",
        )


def paging_checks(v1, ns, t):
    step("create ConfigMaps to page through")
    for i in range(5):
        v1.create_namespaced_config_map(ns, configmap(f"page-{i}", {"group": "paging"}, {"i": str(i)}), **t)
    everything = v1.list_namespaced_config_map(ns, **t)
    all_names = names(everything.items)
    check(len(all_names) >= 7, f"full list has web, db and page-0..4, got {all_names}")
    check(list_continue(everything.metadata) in (None, ""), f"a list without limit has no continue token: {everything.metadata}")

    def page_through(limit, late_name=None, **selectors):
        seen, pages, token, first_rv = [], 0, None, None
        while True:
            kwargs = dict(limit=limit, **selectors, **t)
            if token:
                kwargs["_continue"] = token
            page = v1.list_namespaced_config_map(ns, **kwargs)
            pages += 1
            check(
                len(page.items) <= limit,
                f"page {pages} with limit={limit} {selectors}: at most {limit} items, got {names(page.items)}",
            )
            seen.extend(item.metadata.name for item in page.items)
            if first_rv is None:
                first_rv = page.metadata.resource_version
                if late_name:
                    # Created after the first page: a continued list is a snapshot of the
                    # first page's resourceVersion and must not show it.
                    v1.create_namespaced_config_map(ns, configmap(late_name, {"group": "paging"}, {}), **t)
            else:
                check_eq(
                    page.metadata.resource_version, first_rv,
                    f"page {pages} with limit={limit}: resourceVersion equals the first page's",
                )
            token = list_continue(page.metadata)
            if not token:
                return seen, pages
            check(pages <= 50, f"paging with limit={limit} {selectors}: more than 50 pages, continue token never ends")

    step("page with limit=1")
    seen, pages = page_through(1, late_name="zz-late")
    check_eq(sorted(seen), all_names, "limit=1 paging returns every object")
    check_eq(len(seen), len(set(seen)), f"limit=1 paging returns each object exactly once: {seen}")
    check(pages >= len(all_names), f"limit=1 paging took {pages} pages for {len(all_names)} objects")
    check(
        "zz-late" in names(v1.list_namespaced_config_map(ns, **t).items),
        "the ConfigMap created during paging is in a fresh list",
    )

    step("page with a label selector and limit=2")
    seen, pages = page_through(2, label_selector="group=paging")
    want = sorted([f"page-{i}" for i in range(5)] + ["zz-late"])
    check_eq(sorted(seen), want, "label_selector=group=paging, limit=2 paging returns every match")
    check_eq(len(seen), len(set(seen)), f"label-selected paging returns each object exactly once: {seen}")


def main():
    if len(sys.argv) != 2:
        print("usage: test_client.py <kubeconfig>", file=sys.stderr)
        return 2
    faulthandler.dump_traceback_later(OVERALL_DEADLINE_SECONDS, exit=True)
    try:
        run(sys.argv[1])
    except CheckFailed as exc:
        print(f"FAIL in step '{current_step}': {exc}", file=sys.stderr)
        print(
            f"python client: {checks_passed} checks passed before the failure "
            f"(kubernetes {kubernetes.__version__}, Python {sys.version.split()[0]})",
            file=sys.stderr,
        )
        return 1
    except ApiException as exc:
        traceback.print_exc()
        print(
            f"FAIL in step '{current_step}': unexpected API error {exc.status} {exc.reason}: {exc.body}",
            file=sys.stderr,
        )
        return 1
    except Exception:
        traceback.print_exc()
        print(f"FAIL in step '{current_step}': unexpected exception (traceback above)", file=sys.stderr)
        return 1
    print(f"python client: {checks_passed} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
