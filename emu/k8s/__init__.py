"""Control planes: the Kubernetes object store, kubelet, kube-controller-manager and scheduler parts,
flanneld, and kubectl's views. They drive the emulated kernel only through the namespace API."""

from emu.k8s.store import ApiError, Etcd, Store

__all__ = ["ApiError", "Etcd", "Store"]
