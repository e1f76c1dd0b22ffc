"""Docker's rules for a container's process from run options and the image config: the command,
environment, working directory, user and hostname.

Split from specconv so that `create` (which records them in the container's Config) needs neither
the OCI spec types nor the capability tables.
"""

from __future__ import annotations

import os

from ketch.engine.options import RunOptions, clean_path, parse_env, parse_env_file
from ketch.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    Json = dict[str, Any]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_of(options: RunOptions, image_config: Json) -> list[str]:
    """Docker's rules: an --entrypoint drops the image's Cmd too; "" clears the entrypoint."""
    if options.entrypoint is None:
        entrypoint = list(image_config.get("Entrypoint") or [])
        cmd = list(options.command) or list(image_config.get("Cmd") or [])
    else:
        entrypoint = [] if options.entrypoint in ((), ("",)) else list(options.entrypoint)
        cmd = list(options.command)
    args = entrypoint + cmd
    if not args:
        raise InvalidArgument("No command specified")
    return args


def _env_name(entry: str) -> str:
    return entry.partition("=")[0]


def _replace_or_append(defaults: list[str], overrides: list[str]) -> list[str]:
    """ReplaceOrAppendEnvValues: a later VAR=x replaces in place; a bare VAR unsets it."""
    out: dict[str, str | None] = {_env_name(e): e for e in defaults}
    for entry in overrides:
        if "=" not in entry:
            if entry in out:
                out[entry] = None
            continue
        out[_env_name(entry)] = entry
    return [e for e in out.values() if e is not None]


def env_of(
    options: RunOptions,
    image_config: Json,
    hostname: str,
    home: str = "",
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """PATH (default unless given), HOSTNAME, TERM=xterm with -t, then the user's variables (env
    files, then -e; later wins), then the image's the user did not name, then HOME from the user."""
    user = [line for path in options.env_files for line in parse_env_file(path, environ)]
    user += [parse_env(e, environ) for e in options.env]
    named = {_env_name(e) for e in user}
    config = user + [e for e in image_config.get("Env") or [] if _env_name(e) not in named]
    defaults = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"] + (["TERM=xterm"] if options.tty else [])
    env = _replace_or_append(defaults, config)
    if home and not any(_env_name(e) == "HOME" for e in env):
        env.append(f"HOME={home}")  # runc's rule: HOME from passwd unless the config sets it
    return env


def workdir_of(options: RunOptions, image_config: Json) -> str:
    workdir = options.workdir or image_config.get("WorkingDir") or "/"
    return clean_path("/" + workdir if not workdir.startswith("/") else workdir)


def user_spec_of(options: RunOptions, image_config: Json) -> str:
    """The -u value to resolve with users.resolve_user: the option, else the image's User."""
    return options.user or image_config.get("User") or ""


def hostname_of(options: RunOptions, container_id: str) -> str:
    """--hostname, else the host's name with --network host, else the id's first 12 characters."""
    if options.hostname:
        return options.hostname
    return os.uname().nodename if options.network == "host" else container_id[:12]
