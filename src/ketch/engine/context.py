"""Where an engine keeps its state: the persistent root and the runtime root, and the stores in them."""

from __future__ import annotations

import os

from ketch.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.engine.containers import ContainerStore
    from ketch.engine.images import ImageService
    from ketch.registry.client import RegistryConfig


def engine_config(root: str) -> dict[str, Any]:
    """<root>/engine.json: daemon.json's keys (registries, storage driver, bip, bridge, address pools)."""
    from ketch import jsonio

    try:
        with open(os.path.join(root, "engine.json"), "rb") as f:
            doc: dict[str, Any] = jsonio.loads(f.read())
    except FileNotFoundError:
        return {}
    return doc


class Context(Record):
    root: str  # persistent: images, containers, logs (default /var/lib/ketch)
    runroot: str  # runtime: the OCI runtime's state, sockets (default /run/ketch)
    driver: str = "auto"

    @property
    def runtime_root(self) -> str:
        return os.path.join(self.runroot, "runtime")

    @property
    def supervisor_socket(self) -> str:
        return os.path.join(self.runroot, "supervisor.sock")

    def attach_socket(self, container_id: str) -> str:
        return os.path.join(self.runroot, "attach", container_id[:32])

    def containers(self) -> ContainerStore:
        from ketch.engine.containers import ContainerStore

        return ContainerStore(self.root)

    def images(self, registry: RegistryConfig | None = None) -> ImageService:
        from ketch.engine.images import ImageService

        return ImageService(os.path.join(self.root, "storage"), registry, self.driver)
