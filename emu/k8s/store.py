"""The control planes' datastores: a small Kubernetes API object store and an etcd-like key-value store.

Both notify their watchers on the lab's virtual clock (`clock.call_later`), one callback per event
and watcher, in the order the changes happened, so the same scenario and seed always replay the
same sequence. Objects are copied in and out, as through the API server: `get`/`find`/`list` give
a controller its own copy to change and `update`; `create`/`update` store a copy of what they are
given. Watchers get the stored snapshots (old and new), which, like client-go's informer cache,
they must not change: the store never changes a stored object in place, it replaces it.

Kubernetes objects are dataclasses with the fields the emulated controllers and kubectl need
(metadata, spec, status, annotations), in Kubernetes' vocabulary (`spec.pod_cidr` is
`spec.podCIDR`). Errors carry the API server's messages (`pods "web" already exists`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emu.clock import Clock, Timer

WATCH_DELAY = 0.001  # virtual seconds between a write and its watchers hearing of it (informer latency)

PLURAL = {"Node": "nodes", "Pod": "pods", "ConfigMap": "configmaps", "Event": "events"}
NAMESPACED = {"Pod", "ConfigMap", "Event"}


class ApiError(Exception):
    """An API server error: `reason` is NotFound, AlreadyExists, Conflict or Invalid."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


_SCALARS = (str, int, float, bool, type(None))
_FIELDS: dict[type, tuple[str, ...]] = {}


def clone(obj: Any) -> Any:
    """A deep copy of an API object (dataclasses, dicts, lists and scalars), faster than copy.deepcopy."""
    t = type(obj)
    if t in _SCALARS:
        return obj
    if t is dict:
        return {k: v if type(v) in _SCALARS else clone(v) for k, v in obj.items()}
    if t is list:
        return [v if type(v) in _SCALARS else clone(v) for v in obj]
    names = _FIELDS.get(t)
    if names is None:
        if not (is_dataclass(obj) and not isinstance(obj, type)):
            return obj
        names = _FIELDS[t] = tuple(f.name for f in fields(obj))
    new = object.__new__(t)
    src, dst = obj.__dict__, new.__dict__
    for name in names:
        v = src[name]
        dst[name] = v if type(v) in _SCALARS else clone(v)
    return new


# --- objects -----------------------------------------------------------------------------------

@dataclass
class ObjectMeta:
    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: int = 0
    creation_timestamp: float = 0.0  # virtual seconds
    deletion_timestamp: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner: str = ""  # "Kind/name" of the controlling owner (kubectl's "Controlled By")


@dataclass
class Taint:
    key: str
    effect: str
    value: str = ""


@dataclass
class NodeSpec:
    pod_cidr: str = ""
    pod_cidrs: list[str] = field(default_factory=list)
    unschedulable: bool = False
    taints: list[Taint] = field(default_factory=list)


@dataclass
class NodeAddress:
    type: str
    address: str


@dataclass
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition: float = 0.0


@dataclass
class NodeInfo:
    kubelet_version: str = "v1.29.0"
    os_image: str = "Ubuntu 22.04.3 LTS"
    kernel_version: str = "5.15.0-91-generic"
    container_runtime_version: str = "containerd://1.7.2"


@dataclass
class NodeStatus:
    addresses: list[NodeAddress] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    node_info: NodeInfo = field(default_factory=NodeInfo)


@dataclass
class Node:
    metadata: ObjectMeta
    spec: NodeSpec = field(default_factory=NodeSpec)
    status: NodeStatus = field(default_factory=NodeStatus)
    kind = "Node"

    def internal_ip(self) -> str:
        return next((a.address for a in self.status.addresses if a.type == "InternalIP"), "")

    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)


@dataclass
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    host_port: int = 0
    name: str = ""


@dataclass
class Container:
    name: str
    image: str
    ports: list[ContainerPort] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)


@dataclass
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


@dataclass
class PodSpec:
    containers: list[Container] = field(default_factory=list)
    init_containers: list[Container] = field(default_factory=list)
    node_name: str = ""
    host_network: bool = False
    service_account_name: str = "default"
    priority: int = 0
    priority_class_name: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Toleration] = field(default_factory=list)


@dataclass
class ContainerStatus:
    name: str
    image: str
    image_id: str = ""
    container_id: str = ""
    ready: bool = False
    restart_count: int = 0
    state: str = "waiting"  # waiting | running | terminated
    reason: str = ""  # of a waiting state: ContainerCreating, CrashLoopBackOff
    started_at: float | None = None
    message: str = ""
    last_finished: float | None = None  # lastState.terminated (a crashed run: exit code 1, reason Error)


@dataclass
class PodStatus:
    phase: str = "Pending"
    pod_ip: str = ""
    pod_ips: list[str] = field(default_factory=list)
    host_ip: str = ""
    start_time: float | None = None
    conditions: list[Condition] = field(default_factory=list)
    container_statuses: list[ContainerStatus] = field(default_factory=list)
    init_container_statuses: list[ContainerStatus] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    nominated_node_name: str = ""


@dataclass
class Pod:
    metadata: ObjectMeta
    spec: PodSpec = field(default_factory=PodSpec)
    status: PodStatus = field(default_factory=PodStatus)
    kind = "Pod"


@dataclass
class ConfigMap:
    metadata: ObjectMeta
    data: dict[str, str] = field(default_factory=dict)
    kind = "ConfigMap"


@dataclass
class Event:
    """A core/v1 Event about one object; repeated identical events bump `count` (the event recorder's aggregation)."""

    metadata: ObjectMeta
    involved_kind: str = ""
    involved_name: str = ""
    involved_namespace: str = ""
    involved_uid: str = ""
    type: str = "Normal"
    reason: str = ""
    message: str = ""
    source: str = ""
    first_timestamp: float = 0.0
    last_timestamp: float = 0.0
    count: int = 1
    kind = "Event"


# --- the API object store ------------------------------------------------------------------------

Handler = Callable[..., None]


@dataclass
class Watch:
    """One watcher of a kind: `on_add(obj)`, `on_update(old, new)`, `on_delete(obj)`; `selector(obj)`
    narrows it the way a field selector does (an object that starts matching is an add, one that
    stops matching is a delete)."""

    kind: str
    on_add: Handler | None = None
    on_update: Handler | None = None
    on_delete: Handler | None = None
    selector: Callable[[Any], bool] | None = None
    key: tuple[str, str] | None = None
    active: bool = True

    def stop(self) -> None:
        self.active = False

    def matches(self, obj: Any) -> bool:
        if obj is None:
            return False
        if self.key is not None and INDEXES[(self.kind, self.key[0])](obj) != self.key[1]:
            return False
        return self.selector is None or self.selector(obj)


# Field indexes a watch can be keyed on (a field selector the store can look up instead of scanning).
INDEXES: dict[tuple[str, str], Callable[[Any], str]] = {
    ("Pod", "spec.nodeName"): lambda p: p.spec.node_name,
}


class Store:
    """Kubernetes objects by kind, namespace and name, with resource versions and watches."""

    def __init__(self, clock: Clock, *, delay: float = WATCH_DELAY) -> None:
        self.clock = clock
        self.delay = delay
        self._objects: dict[str, dict[tuple[str, str], Any]] = {}
        self._watches: dict[str, list[Watch]] = {}
        self._keyed: dict[tuple[str, str], dict[str, list[Watch]]] = {}
        self._events: dict[tuple[str, str, str, str, str], Event] = {}
        self._events_by_uid: dict[str, list[str]] = {}
        self._rv = 0
        self._uid = 0

    # --- reads -------------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str = "") -> Any:
        obj = self._objects.get(kind, {}).get((self._ns(kind, namespace), name))
        if obj is None:
            raise ApiError("NotFound", f'{PLURAL.get(kind, kind.lower() + "s")} "{name}" not found')
        return clone(obj)

    def find(self, kind: str, name: str, namespace: str = "") -> Any | None:
        obj = self._objects.get(kind, {}).get((self._ns(kind, namespace), name))
        return None if obj is None else clone(obj)

    def list(self, kind: str, namespace: str | None = None) -> list[Any]:
        """Objects of `kind` (in `namespace`, or all), sorted by namespace then name, as the API lists them."""
        items = self._objects.get(kind, {})
        keys = sorted(k for k in items if namespace is None or k[0] == namespace)
        return [clone(items[k]) for k in keys]

    def count(self, kind: str) -> int:
        return len(self._objects.get(kind, {}))

    # --- writes ------------------------------------------------------------------------------
    def create(self, obj: Any) -> Any:
        kind = obj.kind
        meta = obj.metadata
        if kind in NAMESPACED and not meta.namespace:
            meta.namespace = "default"
        key = (self._ns(kind, meta.namespace), meta.name)
        bucket = self._objects.setdefault(kind, {})
        if key in bucket:
            raise ApiError("AlreadyExists", f'{PLURAL.get(kind, kind.lower() + "s")} "{meta.name}" already exists')
        self._uid += 1
        meta.uid = meta.uid or _uid(self._uid)
        meta.creation_timestamp = self.clock.now
        self._rv += 1
        meta.resource_version = self._rv
        stored = clone(obj)
        bucket[key] = stored
        self._notify(kind, None, stored)
        return obj

    def update(self, obj: Any) -> Any:
        """Replaces the stored object (a later resource version wins: no optimistic-concurrency conflicts)."""
        kind = obj.kind
        meta = obj.metadata
        key = (self._ns(kind, meta.namespace), meta.name)
        bucket = self._objects.get(kind, {})
        old = bucket.get(key)
        if old is None:
            raise ApiError("NotFound", f'{PLURAL.get(kind, kind.lower() + "s")} "{meta.name}" not found')
        self._rv += 1
        meta.resource_version = self._rv
        meta.uid = old.metadata.uid
        meta.creation_timestamp = old.metadata.creation_timestamp
        stored = clone(obj)
        bucket[key] = stored
        self._notify(kind, old, stored)
        return obj

    def delete(self, kind: str, name: str, namespace: str = "") -> Any:
        key = (self._ns(kind, namespace), name)
        bucket = self._objects.get(kind, {})
        old = bucket.pop(key, None)
        if old is None:
            raise ApiError("NotFound", f'{PLURAL.get(kind, kind.lower() + "s")} "{name}" not found')
        self._rv += 1
        self._notify(kind, old, None)
        return old

    def record_event(self, obj: Any, type_: str, reason: str, message: str, source: str) -> None:
        """Records an Event about `obj`; the same (object, type, reason, message, source) again bumps its count."""
        meta = obj.metadata
        ns = meta.namespace or "default"
        key = (meta.uid, type_, reason, message, source)
        ev = self._events.get(key)
        if ev is not None and self.find("Event", ev.metadata.name, ns) is not None:
            ev.count += 1
            ev.last_timestamp = self.clock.now
            self.update(ev)
            return
        self._uid += 1
        ev = Event(ObjectMeta(name=f"{meta.name}.{self._uid:016x}", namespace=ns), involved_kind=obj.kind,
                   involved_name=meta.name, involved_namespace=meta.namespace, involved_uid=meta.uid, type=type_,
                   reason=reason, message=message, source=source, first_timestamp=self.clock.now,
                   last_timestamp=self.clock.now)
        self._events[key] = ev
        self._events_by_uid.setdefault(meta.uid, []).append(ev.metadata.name)
        self.create(ev)

    def events_for(self, obj: Any) -> list[Event]:
        """The events about `obj` (by its uid), by last occurrence (kubectl's SortableEvents order)."""
        meta = obj.metadata
        ns = meta.namespace or "default"
        evs = [e for e in (self.find("Event", n, ns) for n in self._events_by_uid.get(meta.uid, [])) if e is not None]
        return sorted(evs, key=lambda e: e.last_timestamp)

    # --- watches -----------------------------------------------------------------------------
    def watch(self, kind: str, *, on_add: Handler | None = None, on_update: Handler | None = None,
              on_delete: Handler | None = None, selector: Callable[[Any], bool] | None = None,
              key: tuple[str, str] | None = None, replay: bool = True) -> Watch:
        """Registers a watcher; with `replay` the objects already there arrive as adds first (list, then watch).

        `key=("spec.nodeName", "node1")` is a field selector on an indexed field (INDEXES): the store
        looks such watchers up by value instead of asking every watcher about every change.
        """
        if key is not None and (kind, key[0]) not in INDEXES:
            raise ValueError(f"no index {key[0]!r} on {kind}")
        w = Watch(kind, on_add, on_update, on_delete, selector, key)
        if key is None:
            self._watches.setdefault(kind, []).append(w)
        else:
            self._keyed.setdefault((kind, key[0]), {}).setdefault(key[1], []).append(w)
        if replay and on_add is not None:
            items = self._objects.get(kind, {})
            for k in sorted(items):
                if w.matches(items[k]):
                    self._post(w, on_add, items[k])
        return w

    def _candidates(self, kind: str, old: Any | None, new: Any | None) -> list[Watch]:
        out = []
        watches = self._watches.get(kind)
        if watches:
            watches[:] = [w for w in watches if w.active]
            out.extend(watches)
        for (k, index), by_value in self._keyed.items():
            if k != kind:
                continue
            values = {INDEXES[(k, index)](o) for o in (old, new) if o is not None}
            for value in sorted(values):
                ws = by_value.get(value)
                if ws:
                    ws[:] = [w for w in ws if w.active]
                    out.extend(ws)
        return out

    def _notify(self, kind: str, old: Any | None, new: Any | None) -> None:
        for w in self._candidates(kind, old, new):
            was, now = w.matches(old), w.matches(new)
            if now and not was and w.on_add is not None:
                self._post(w, w.on_add, new)
            elif now and was and w.on_update is not None:
                self._post(w, w.on_update, old, new)
            elif was and not now and w.on_delete is not None:
                self._post(w, w.on_delete, old)

    def _post(self, w: Watch, fn: Handler, *args: Any) -> None:
        def run() -> None:
            if w.active:
                fn(*args)

        self.clock.call_later(self.delay, run)

    @staticmethod
    def _ns(kind: str, namespace: str) -> str:
        return (namespace or "default") if kind in NAMESPACED else ""


def _uid(n: int) -> str:
    """A deterministic RFC 4122-shaped UID from a counter."""
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:]}"


# --- etcd -----------------------------------------------------------------------------------------

@dataclass
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    ttl: float | None = None
    expires: float | None = None


EtcdHandler = Callable[[str, str, "KeyValue | None", "KeyValue | None"], None]


class Etcd:
    """An etcd v3-like key-value store: revisions, leases (TTL expiry on the virtual clock) and prefix watches.

    A watcher gets `fn(type, key, kv, prev_kv)` with type "PUT" or "DELETE" (an expired key is a DELETE).
    """

    def __init__(self, clock: Clock, *, delay: float = WATCH_DELAY) -> None:
        self.clock = clock
        self.delay = delay
        self.revision = 1
        self._kv: dict[str, KeyValue] = {}
        self._expiry: dict[str, Timer] = {}
        self._watches: list[tuple[str, EtcdHandler, list[bool]]] = []

    def get(self, key: str) -> KeyValue | None:
        kv = self._kv.get(key)
        return None if kv is None else KeyValue(**kv.__dict__)

    def range(self, prefix: str) -> list[KeyValue]:
        return [KeyValue(**self._kv[k].__dict__) for k in sorted(self._kv) if k.startswith(prefix)]

    def put(self, key: str, value: str, *, ttl: float | None = None) -> KeyValue:
        prev = self._kv.get(key)
        self.revision += 1
        kv = KeyValue(key, value, prev.create_revision if prev else self.revision, self.revision, ttl,
                      self.clock.now + ttl if ttl else None)
        self._kv[key] = kv
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()
        if ttl:
            self._expiry[key] = self.clock.call_later(ttl, lambda: self._expire(key))
        self._notify("PUT", key, kv, prev)
        return KeyValue(**kv.__dict__)

    def create(self, key: str, value: str, *, ttl: float | None = None) -> KeyValue | None:
        """A transaction `if create_revision(key) == 0 then put`: None when the key already exists."""
        if key in self._kv:
            return None
        return self.put(key, value, ttl=ttl)

    def delete(self, key: str) -> bool:
        prev = self._kv.pop(key, None)
        if prev is None:
            return False
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()
        self.revision += 1
        self._notify("DELETE", key, None, prev)
        return True

    def _expire(self, key: str) -> None:
        self._expiry.pop(key, None)
        if key in self._kv:
            self.delete(key)

    def watch(self, prefix: str, fn: EtcdHandler) -> Callable[[], None]:
        """Watches keys under `prefix`; returns a function that cancels the watch."""
        alive = [True]
        entry = (prefix, fn, alive)
        self._watches.append(entry)

        def cancel() -> None:
            alive[0] = False
            if entry in self._watches:
                self._watches.remove(entry)

        return cancel

    def _notify(self, type_: str, key: str, kv: KeyValue | None, prev: KeyValue | None) -> None:
        for prefix, fn, alive in list(self._watches):
            if key.startswith(prefix):
                a = KeyValue(**kv.__dict__) if kv else None
                b = KeyValue(**prev.__dict__) if prev else None
                self.clock.call_later(self.delay,
                                      lambda fn=fn, alive=alive, a=a, b=b: alive[0] and fn(type_, key, a, b))
