"""Run the spec's lifecycle hooks with the container state on stdin, each within its timeout."""

from __future__ import annotations

from ketch import jsonio
from ketch.errors import SetupFailed
from ketch.oci.runtime import Hook

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run(hooks: tuple[Hook, ...], kind: str, state: dict[str, Any]) -> None:
    """Run hooks in order; the first failure stops the rest and raises SetupFailed."""
    if not hooks:
        return
    import subprocess

    payload = jsonio.dumps(state).encode()
    for i, hook in enumerate(hooks):
        argv = list(hook.args) or [hook.path]
        env = dict(e.split("=", 1) for e in hook.env if "=" in e)
        try:
            proc = subprocess.run(
                argv,
                executable=hook.path,
                input=payload,
                env=env,
                capture_output=True,
                timeout=hook.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SetupFailed(f"{kind} hook #{i} ({hook.path}) timed out after {hook.timeout}s") from exc
        except OSError as exc:
            raise SetupFailed(f"{kind} hook #{i} ({hook.path}): {exc.strerror}", exc.errno) from exc
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
            why = f": {detail[-1]}" if detail else ""
            raise SetupFailed(f"{kind} hook #{i} ({hook.path}) exited with status {proc.returncode}{why}")
