"""`ketch build`: a Dockerfile's stages run step by step on ketch's own engine.

The shape is Docker's classic builder: each step starts from an image and yields an image.
RUN runs in a real container (created from the step's image, started through the supervisor
with Docker's defaults, its output streamed) whose changes are committed as a layer; COPY and
ADD unpack a tar of their sources into a created (never started) container through the safe
unpacker, then commit it; other instructions change only the config (a history step with no
layer). Every step's result is recorded in the cache under a key made of its parent image,
the instruction as expanded, the build args it sees and, for COPY/ADD, a digest of the
sources' names, modes and contents (not their times); a cached step runs nothing. Results are
untagged images that remember their parent (`images -a` shows them; `builder prune` drops
the cache).
"""

from __future__ import annotations

import os

from ketch.build import dockerfile as df
from ketch.errors import CommandFailed, InvalidArgument, KetchError, NotFound
from ketch.record import Record, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from ketch.build.context import Root, Source
    from ketch.engine.containers import ContainerRecord
    from ketch.engine.context import Context
    from ketch.image.store import ImageRecord

SHELL_PREFIX = "/bin/sh -c #(nop) "  # Docker's history for steps without a layer


class BuildOptions(Record):
    context: str  # the context directory ("" when there is none: a Dockerfile from stdin)
    dockerfile: str  # the Dockerfile's text
    filename: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    target: str = ""
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    pull: bool = False
    network: str = "default"
    quiet: bool = False


class Progress:
    """What a build tells as it goes; this one writes Docker's classic builder output to `write`."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def step(self, number: int, total: int, text: str) -> None:
        self.write(f"Step {number}/{total} : {text}\n")

    def cached(self) -> None:
        self.write(" ---> Using cache\n")

    def running(self, container: str) -> None:
        self.write(f" ---> Running in {container}\n")

    def output(self, text: str) -> None:
        self.write(text)

    def removed(self, container: str) -> None:
        self.write(f"Removing intermediate container {container}\n")

    def result(self, image_id: str) -> None:
        self.write(f" ---> {_short(image_id)}\n")

    def warning(self, text: str) -> None:
        self.write(f"[Warning] {text}\n")


class _State:
    """Where a stage stands: its current image and the config the next step starts from."""

    def __init__(
        self, image: ImageRecord, config: dict[str, Any], args: dict[str, str], cmd_set: bool = False
    ) -> None:
        self.image = image
        self.config = config
        self.args = args  # ARGs in scope, with their values (None-valued ones are left out)
        self.cmd_set = cmd_set  # a CMD ran in this stage (ENTRYPOINT then keeps it)


class Builder:
    def __init__(self, ctx: Context, options: BuildOptions, progress: Progress) -> None:
        self.ctx, self.options, self.progress = ctx, options, progress
        self.service = ctx.images()
        self.parsed = df.parse(options.dockerfile, options.filename)
        self.escape = self.parsed.escape
        self.stage_images: dict[int, ImageRecord] = {}
        self.root: Root | None = None
        self.steps = 0
        self.step = 0
        self.used_args: set[str] = set()

    # --- the build --------------------------------------------------------------------------------

    def build(self) -> str:
        """Build every stage the target needs; the target's image ID, tagged as asked."""
        from ketch.build.context import Root

        if self.options.context:
            self.root = Root(self.options.context, _ignore_rules(self.options.context))
        meta = df.resolve_meta(self.parsed, self.options.build_args)
        needed = df.needed_stages(self.parsed, self.options.target or None, self.options.build_args)
        self.steps = sum(1 + len(self.parsed.stages[i].instructions) for i in needed)
        image: ImageRecord | None = None
        for index in needed:
            image = self._stage(self.parsed.stages[index], meta)
            self.stage_images[index] = image
        assert image is not None
        if self.options.labels:
            labels = self.options.labels
            image = self._meta_step(_State(image, self._config(image), {}), _labels_change(labels),
                                    lambda c: c.update(Labels={**(c.get("Labels") or {}), **labels}))  # fmt: skip
        for tag in self.options.tags:
            self.service.images.tag(image.id, _full_name(tag))
        unused = sorted(set(self.options.build_args) - self.used_args - set(meta) - df.PROXY_ARGS)
        if unused:
            self.progress.warning(f"One or more build-args {unused} were not consumed")
        return image.id

    def _stage(self, stage: df.Stage, meta: dict[str, str]) -> ImageRecord:
        base = df.expand(stage.base, meta, self.escape)
        self._announce(f"FROM {base}" + (f" AS {stage.name}" if stage.name else ""))
        image = self._base(base)
        state = _State(image, self._config(image), {})
        self.progress.result(image.id)
        for trigger in state.config.get("OnBuild") or []:
            instruction = df.parse(f"FROM scratch\n{trigger}").stages[0].instructions[0]
            state = self._run_step(state, instruction, meta)
        state.config["OnBuild"] = None
        for instruction in stage.instructions:
            self._announce(instruction.original)
            state = self._run_step(state, instruction, meta)
            self.progress.result(state.image.id)
        return state.image

    def _announce(self, text: str) -> None:
        self.step += 1
        self.progress.step(self.step, self.steps, text)

    def _base(self, base: str) -> ImageRecord:
        """FROM: an earlier stage, `scratch`, or an image (pulled when missing, or with --pull)."""
        for index, image in self.stage_images.items():
            stage = self.parsed.stages[index]
            if base.lower() in (stage.name, str(index)):
                return image
        if base == "scratch":
            return self._scratch()
        if not self.options.pull:
            try:
                return self.service.get(base)
            except NotFound:
                pass
        return self.service.pull(base).image

    def _scratch(self) -> ImageRecord:
        """An image with no layer and no history, to build FROM scratch on."""
        from ketch.engine.filesystem import register

        config = {"architecture": _arch(), "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": []}, "history": []}  # fmt: skip
        key = _key("scratch")
        cached = self._cached(key)
        if cached is not None:
            return cached
        image_id = register(self.service, None, config, None, None, {}, _no_history())
        self._remember(key, image_id)
        return self.service.get(image_id)

    def _config(self, image: ImageRecord) -> dict[str, Any]:
        config: dict[str, Any] = dict(self.service.config_json(image).get("config") or {})
        return config

    # --- one step -----------------------------------------------------------------------------------

    def _run_step(self, state: _State, ins: df.Instruction, meta: dict[str, str]) -> _State:
        kind = ins.kind
        env = self._env(state)
        if kind == "ARG":
            assert isinstance(ins, df.ArgInstruction)
            for arg in ins.declared:
                value = self.options.build_args.get(arg.name)
                if value is None:
                    default = meta.get(arg.name) if arg.default is None else arg.default
                    value = None if default is None else df.expand(default, env, self.escape)
                else:
                    self.used_args.add(arg.name)
                if value is not None:
                    state.args[arg.name] = value
            return state
        if kind in ("RUN",):
            assert isinstance(ins, df.RunInstruction)
            return self._run(state, ins)
        if kind in ("COPY", "ADD"):
            assert isinstance(ins, df.CopyInstruction)
            return self._copy(state, ins, env)
        change, apply = self._metadata(state, ins, env)
        if kind == "WORKDIR":
            image = self._workdir(state, change, apply)
            return _State(image, self._config(image), state.args, state.cmd_set)
        image = self._meta_step(state, change, apply)
        return _State(image, self._config(image), state.args, state.cmd_set or kind == "CMD")

    def _env(self, state: _State) -> dict[str, str]:
        """What words expand with: the ARGs in scope, overridden by the config's ENV."""
        env = dict(state.args)
        for entry in state.config.get("Env") or []:
            key, _, value = entry.partition("=")
            env[key] = value
        return env

    def _metadata(
        self, state: _State, ins: df.Instruction, env: dict[str, str]
    ) -> tuple[str, Callable[[dict[str, Any]], None]]:
        """The history text of a config-only instruction and how it changes the config."""
        kind, esc = ins.kind, self.escape

        def words() -> list[str]:
            return [df.expand(w, env, esc) for w in ins.args] if ins.kind in df.EXPANDS else list(ins.args)

        if kind in ("ENV", "LABEL"):
            assert isinstance(ins, df.PairsInstruction)
            pairs = [(df.expand(k, env, esc), df.expand(v, env, esc)) for k, v in ins.pairs]

            def pairs_into(config: dict[str, Any]) -> None:
                if kind == "LABEL":
                    config["Labels"] = {**(config.get("Labels") or {}), **dict(pairs)}
                    return
                current = list(config.get("Env") or [])
                for key, value in pairs:
                    keys = [e.partition("=")[0] for e in current]
                    entry = f"{key}={value}"
                    if key in keys:
                        current[keys.index(key)] = entry
                    else:
                        current.append(entry)
                config["Env"] = current

            return f"{kind} " + " ".join(f"{k}={v}" for k, v in pairs), pairs_into
        if kind in ("CMD", "ENTRYPOINT"):
            argv = list(ins.args) if ins.json_form else [*self._shell(state), ins.args[0] if ins.args else ""]

            def command_into(config: dict[str, Any]) -> None:
                config["Cmd" if kind == "CMD" else "Entrypoint"] = argv
                if kind == "ENTRYPOINT" and not state.cmd_set:
                    config["Cmd"] = None  # ENTRYPOINT resets an inherited CMD, as Docker does

            return f"{kind} {_json(argv)}", command_into
        if kind == "WORKDIR":
            target = words()[0]
            path = (
                target
                if target.startswith("/")
                else os.path.join(state.config.get("WorkingDir") or "/", target)
            )
            path = os.path.normpath(path)
            return f"WORKDIR {path}", lambda c: c.update(WorkingDir=path)
        if kind == "USER":
            user = words()[0]
            return f"USER {user}", lambda c: c.update(User=user)
        if kind == "EXPOSE":
            ports = [p if "/" in p else f"{p}/tcp" for w in words() for p in w.split()]
            return f"EXPOSE {' '.join(ports)}", lambda c: c.update(
                ExposedPorts={**(c.get("ExposedPorts") or {}), **{p: {} for p in ports}}
            )
        if kind == "VOLUME":
            paths = [w for w in words() if w]
            if not paths:
                raise InvalidArgument(
                    f"{self.options.filename}:{ins.line}: VOLUME specified can not be an empty string"
                )
            return f"VOLUME {_json(paths)}", lambda c: c.update(
                Volumes={**(c.get("Volumes") or {}), **{p: {} for p in paths}}
            )
        if kind == "STOPSIGNAL":
            signal = words()[0]
            return f"STOPSIGNAL {signal}", lambda c: c.update(StopSignal=signal)
        if kind == "SHELL":
            shell = list(ins.args)
            return f"SHELL {_json(shell)}", lambda c: c.update(Shell=shell)
        if kind == "MAINTAINER":
            return f"MAINTAINER {ins.args[0]}", lambda c: None
        if kind == "HEALTHCHECK":
            assert isinstance(ins, df.HealthcheckInstruction)
            health = _health_json(ins.health)
            return f"HEALTHCHECK {_json(health)}", lambda c: c.update(Healthcheck=health)
        if kind == "ONBUILD":
            assert isinstance(ins, df.OnbuildInstruction)
            expression = ins.expression
            return f"ONBUILD {expression}", lambda c: c.update(
                OnBuild=[*(c.get("OnBuild") or []), expression]
            )
        raise InvalidArgument(f"{self.options.filename}:{ins.line}: unknown instruction: {kind}")

    def _shell(self, state: _State) -> list[str]:
        return list(state.config.get("Shell") or df.DEFAULT_SHELL)

    def _meta_step(self, state: _State, change: str, apply: Callable[[dict[str, Any]], None]) -> ImageRecord:
        created_by = SHELL_PREFIX + change
        key = _key(state.image.id, created_by)
        cached = self._hit(key)
        if cached is not None:
            return cached
        from ketch.engine.filesystem import Step, register

        config = dict(state.config)
        apply(config)
        parent = self.service.config_json(state.image)
        image_id = register(self.service, state.image, parent, None, None, config, Step(created_by))
        self._remember(key, image_id)
        return self.service.get(image_id)

    def _workdir(self, state: _State, change: str, apply: Callable[[dict[str, Any]], None]) -> ImageRecord:
        """WORKDIR: the config, and the directory made in the image when it is missing (owned by
        the USER then in force, as BuildKit makes it)."""
        created_by = SHELL_PREFIX + change
        key = _key(state.image.id, created_by, "mkdir")
        cached = self._hit(key)
        if cached is not None:
            return cached
        from ketch.engine import filesystem

        config = dict(state.config)
        apply(config)
        path = config["WorkingDir"]
        record = self._container(state, ["true"], (), "none")
        try:
            with filesystem.rootfs(self.ctx, record) as rootfs:
                exists = bool(filesystem.kinds(rootfs, [path]).get(path))
            user = state.config.get("User") or ""
            made = (
                None
                if exists
                else self._put(record, state, [], [], path, True, user, "", created_by, config=config)
            )
        finally:
            self._remove(record)
        if made is None:
            return self._meta_step(state, change, apply)
        self._remember(key, made)
        return self.service.get(made)

    # --- RUN --------------------------------------------------------------------------------------

    def _run(self, state: _State, ins: df.RunInstruction) -> _State:
        import contextlib

        if ins.heredocs and not ins.json_form:
            script = ins.args[0] if ins.args else ""
            argv = [*self._shell(state), _heredoc_script(script, ins.heredocs)]
        elif ins.json_form:
            argv = list(ins.args)
        else:
            argv = [*self._shell(state), ins.args[0] if ins.args else ""]
        env_names = {e.partition("=")[0] for e in state.config.get("Env") or []}
        visible = {k: v for k, v in state.args.items() if k not in env_names}
        self.used_args.update(visible)
        args_text = " ".join(f"{k}={v}" for k, v in sorted(visible.items()))
        created_by = (f"|{len(visible)} {args_text} " if visible else "") + " ".join(argv)
        network = ins.network if ins.network != "default" else self.options.network
        specs = [df.parse_mount(m, self._env(state), self.escape) for m in ins.mounts]
        with contextlib.ExitStack() as stack:
            mounts, digest = self._run_mounts(specs, stack)
            key = _key(state.image.id, "RUN", created_by, network, _json(specs), digest)
            cached = self._hit(key)
            if cached is not None:
                return _State(cached, self._config(cached), state.args, state.cmd_set)
            env = tuple(f"{k}={v}" for k, v in sorted(visible.items()))
            net = "bridge" if network in ("default", "bridge") else network
            record = self._container(state, argv, env, net, mounts)
            try:
                stubs = self._stubs(record, [m.target for m in mounts])
                self.progress.running(record.short_id)
                code = self._attach(record)
                if code != 0:
                    raise CommandFailed(
                        f"The command '{' '.join(argv)}' returned a non-zero code: {code}", code
                    )
                if stubs:
                    from ketch.engine.filesystem import remove_empty

                    remove_empty(self.ctx, record, stubs)  # mount points are not part of the result
                image_id = self._commit(record, state, created_by)
            finally:
                self._remove(record)
                self.progress.removed(record.short_id)
        self._remember(key, image_id)
        image = self.service.get(image_id)
        return _State(image, self._config(image), state.args, state.cmd_set)

    def _stubs(self, record: ContainerRecord, targets: list[str]) -> list[str]:
        """The directories the runtime will create for these mount targets (missing in the image)."""
        if not targets:
            return []
        from ketch.engine import filesystem

        wanted = sorted({p for t in targets for p in _parents(t)})
        with filesystem.rootfs(self.ctx, record) as rootfs:
            there = filesystem.kinds(rootfs, wanted)
        return [p for p in wanted if not there.get(p)]

    def _run_mounts(self, specs: list[dict[str, str]], stack: Any) -> tuple[tuple[Any, ...], str]:
        """RUN --mount: bind (from the context, or a stage's or image's rootfs; a writable one gets a
        throwaway copy, as BuildKit discards its writes), cache (a directory kept under the root,
        by id) and tmpfs; the engine's Mount records, and a digest of the bound context sources."""
        import tempfile

        if not specs:
            return (), _key()
        from ketch.build.context import Root, content_hash
        from ketch.engine.options import Mount

        mounts: list[Any] = []
        digests: list[str] = []
        for spec in specs:
            kind, target = spec["type"], spec.get("target", "")
            readonly = spec.get("readonly") == "true"
            if kind == "tmpfs":
                size = (f"size={spec['size']}",) if spec.get("size") else ()
                mounts.append(Mount("tmpfs", "", target, options=size))
                continue
            if kind == "cache":
                mounts.append(Mount("bind", self._cache_mount(spec, stack), target, readonly))
                continue
            if kind != "bind":
                raise InvalidArgument(f"RUN --mount=type={kind} is not supported")
            if spec.get("from"):
                source = Root(self._mount_root(spec["from"], stack))
            elif self.root is not None:
                source = self.root
            else:
                raise InvalidArgument("RUN --mount=type=bind needs a build context or from=")
            real = source.resolve(spec.get("source", "."))
            if not spec.get("from"):
                found = source.sources(spec.get("source", "."))
                digests.append(content_hash(found))
            if not readonly:
                scratch = stack.enter_context(tempfile.TemporaryDirectory(dir=self.service.root))
                copy = os.path.join(scratch, "rw")
                _copy_any(real, copy)
                if (remapped := self._remapped()) is not None:
                    os.chmod(scratch, 0o711)  # the RUN's root must get through to it
                    if not spec.get("from"):
                        _chown_tree(
                            copy, remapped.root
                        )  # a context copy is the RUN's root's, as it is root's
                real = copy
            mounts.append(Mount("bind", real, target, readonly))
        return tuple(mounts), _key(*digests)

    def _cache_mount(self, spec: dict[str, str], stack: Any) -> str:
        """A cache mount's directory: kept under <root>/build/mounts by id (the target by
        default), made with its mode/uid/gid; sharing=locked holds it for the RUN, private takes a
        fresh one while another build holds it."""
        import fcntl
        import hashlib
        import tempfile

        from ketch.files import FileLock

        ident = spec.get("id") or spec["target"]
        base = os.path.join(self.ctx.root, "build", "mounts")
        directory = os.path.join(base, hashlib.sha256(ident.encode()).hexdigest()[:32])
        if not os.path.isdir(directory):
            os.makedirs(base, exist_ok=True)
            tmp = f"{directory}.{os.getpid()}"
            os.makedirs(tmp, exist_ok=True)
            os.chmod(tmp, int(spec.get("mode", "755"), 8))
            owner = int(spec.get("uid", "0")), int(spec.get("gid", "0"))
            remapped = self._remapped()  # under userns-remap, owned as the RUN container sees it
            os.chown(tmp, *(remapped.host_ids(*owner) if remapped is not None else owner))
            try:
                os.rename(tmp, directory)
            except OSError:
                os.rmdir(tmp)  # another build made it first
        sharing = spec.get("sharing", "shared")
        if sharing == "locked":
            stack.enter_context(FileLock(f"{directory}.lock"))
        elif sharing == "private":
            fd = os.open(f"{directory}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return str(stack.enter_context(tempfile.TemporaryDirectory(dir=base)))
        return directory

    def _remapped(self) -> Any:
        """The engine's userns-remap (RUN containers get a user namespace), None when off."""
        from ketch.engine import userns

        return userns.remap(self.ctx.root)

    def _mount_root(self, name: str, stack: Any) -> str:
        """A stage's or image's rootfs mounted on a directory of its own, for a RUN bind mount."""
        import tempfile

        from ketch.engine import filesystem
        from ketch.linux import syscalls

        image = self._stage_or_image(name)
        holder = self._container(_State(image, self._config(image), {}), ["true"], (), "none")
        stack.callback(self._remove, holder)
        target = str(stack.enter_context(tempfile.TemporaryDirectory(dir=self.service.root)))
        if self._remapped() is not None:
            os.chmod(target, 0o711)  # the RUN's root must get through to it
        filesystem.mount_snapshot(
            self.service.snapshots, holder, target
        )  # idmapped as the RUN's, if remapped
        stack.callback(syscalls.umount, target, syscalls.MNT_DETACH)
        return target

    def _stage_or_image(self, name: str) -> ImageRecord:
        for index, built in self.stage_images.items():
            if name.lower() in (self.parsed.stages[index].name, str(index)):
                return built
        return self._base(name)

    def _container(
        self,
        state: _State,
        argv: list[str],
        env: tuple[str, ...],
        network: str,
        mounts: tuple[Any, ...] = (),
        userns: str = "",
    ) -> ContainerRecord:
        from ketch.engine.create import create
        from ketch.engine.options import RunOptions

        options = RunOptions(
            image=state.image.id, command=tuple(argv), entrypoint=(), env=env, network=network,
            user=state.config.get("User") or "", workdir=state.config.get("WorkingDir") or "",
            no_healthcheck=True, pull="never", name=f"ketch-build-{os.urandom(6).hex()}", mounts=mounts,
            userns=userns,
        )  # fmt: skip
        return create(self.ctx, options, state.image, state.config)

    def _attach(self, record: ContainerRecord) -> int:
        """Start the container, stream its output, and return its exit code."""
        from ketch.engine import lifecycle, stream

        started = lifecycle.start(self.ctx, record, attach=True)
        frames = list(started.reader.backlog)
        try:
            while True:
                for kind, payload in frames:
                    if kind in (stream.STDOUT, stream.STDERR):
                        self.progress.output(payload.decode(errors="replace"))
                    elif kind == stream.EXIT:
                        return int(payload or b"0")
                    elif kind == stream.ERROR:
                        raise lifecycle.start_error(payload)
                data = started.sock.recv(65536)
                if not data:
                    raise KetchError(f"lost the connection to the monitor of {record.short_id}")
                frames = started.reader.feed(data)
        finally:
            started.sock.close()

    def _commit(self, record: ContainerRecord, state: _State, created_by: str,
                config: dict[str, Any] | None = None) -> str:  # fmt: skip
        from ketch.engine.filesystem import commit

        return commit(
            self.ctx, record, config=dict(state.config if config is None else config), created_by=created_by
        )

    def _remove(self, record: ContainerRecord) -> None:
        from ketch.engine import lifecycle

        try:
            lifecycle.remove_container(self.ctx, record, volumes=True, force=True)
        except KetchError:
            pass

    # --- COPY and ADD ---------------------------------------------------------------------------------

    def _copy(self, state: _State, ins: df.CopyInstruction, env: dict[str, str]) -> _State:
        import contextlib

        esc = self.escape
        dest = df.expand(ins.dest, env, esc)
        chown = df.expand(ins.chown, env, esc) if ins.chown else ""
        chmod = df.expand(ins.chmod, env, esc) if ins.chmod else ""
        if chmod and not _octal(chmod):
            raise InvalidArgument(f"{self.options.filename}:{ins.line}: invalid chmod parameter: {chmod}")
        sources = [df.expand(s, env, esc) for s in ins.sources]
        workdir = state.config.get("WorkingDir") or "/"
        target = os.path.normpath(dest if dest.startswith("/") else os.path.join(workdir, dest))
        many = len(sources) + len(ins.inline) > 1
        if many and not (dest.endswith("/") or dest in (".", "")):
            raise InvalidArgument(f"{self.options.filename}:{ins.line}: When using {ins.kind} with more than one "
                                  "source file, the destination must be a directory and end with a /")  # fmt: skip
        into_dir = (
            many or dest.endswith("/") or dest in (".", "") or any(c in s for s in sources for c in "*?[")
        )
        heredocs = [(h.name, df.expand(h.body, env, esc) if h.expand else h.body) for h in ins.inline]
        shown = " ".join(sources + [h[0] for h in heredocs])
        created_by = (
            f"{SHELL_PREFIX}{ins.kind} " + (f"--chown={chown} " if chown else "") + f"{shown} in {target} "
        )
        settings = [ins.kind, target, into_dir, chown, chmod, heredocs, ins.parents, list(ins.excludes)]
        with contextlib.ExitStack() as stack:
            scratch = _Scratch(stack, self.service.root)
            if ins.copy_from:
                # a stage's or image's files are known by its ID: no need to read them to look up the cache
                source = self._stage_or_image(df.expand(ins.copy_from, env, esc))
                digest = _key(source.id, _json([sources, settings]))
                picked: list[tuple[Source, bool]] | None = None
            else:
                root = self._source_root(ins, env, stack)
                picked, into_dir_source = self._pick(root, ins, sources, scratch)
                digest = _content_digest(picked, [*settings, into_dir or into_dir_source])
            key = _key(state.image.id, created_by, digest)
            cached = self._hit(key)
            if cached is not None:
                return _State(cached, self._config(cached), state.args, state.cmd_set)
            if picked is None:
                root = self._source_root(ins, env, stack)
                picked, into_dir_source = self._pick(root, ins, sources, scratch)
            record = self._container(state, ["true"], (), "none")
            try:
                image_id = self._put(record, state, picked, heredocs, target, into_dir or into_dir_source, chown,
                                     chmod, created_by, keep_owners=bool(ins.copy_from))  # fmt: skip
            finally:
                self._remove(record)
        self._remember(key, image_id)
        image = self.service.get(image_id)
        return _State(image, self._config(image), state.args, state.cmd_set)

    def _pick(self, root: Root, ins: df.CopyInstruction, sources: list[str],
              scratch: _Scratch) -> tuple[list[tuple[Source, bool]], bool]:  # fmt: skip
        """Every source file with whether ADD unpacks it (a local archive); and whether the one
        source is a directory (whose contents then go into the destination directory)."""
        from ketch.build.context import Source
        from ketch.build.ignore import IgnoreRules

        excluded = IgnoreRules(ins.excludes) if ins.excludes else None
        picked: list[tuple[Source, bool]] = []
        directory = False
        for pattern in sources:
            if ins.kind == "ADD" and pattern.startswith(("http://", "https://")):
                picked.append((self._download(pattern, scratch.path()), False))
                continue
            found = root.sources(pattern)
            if excluded is not None:  # --exclude: .dockerignore patterns on paths in the copied source
                found = [f for f in found if not excluded.excluded(f.name)]
            if ins.parents:  # --parents: each file keeps its path from the source root
                found = [Source(f.path, root.relative(f.path), f.st) for f in found]
            elif not any(c in pattern for c in "*?["):
                directory = directory or os.path.isdir(root.resolve(pattern))
            picked += [
                (src, ins.kind == "ADD" and ins.unpack is not False and _is_archive(src)) for src in found
            ]
        return picked, directory or ins.parents

    def _source_root(self, ins: df.CopyInstruction, env: dict[str, str], stack: Any) -> Root:
        """The context, or with --from a stage's or an image's rootfs (a private mount of a
        created, never started container, for as long as `stack` lives)."""
        from ketch.build.context import Root
        from ketch.engine import filesystem

        if not ins.copy_from:
            if self.root is None:
                raise InvalidArgument(f"{self.options.filename}:{ins.line}: {ins.kind} needs a build context")
            return self.root
        image = self._stage_or_image(df.expand(ins.copy_from, env, self.escape))
        # read as the image has it: no user namespace, so its owners are not shown as host ids
        holder = self._container(_State(image, self._config(image), {}), ["true"], (), "none", userns="host")
        stack.callback(self._remove, holder)
        return Root(stack.enter_context(filesystem.rootfs(self.ctx, holder)))

    def _download(self, url: str, scratch: str) -> Source:
        """ADD <url>: the file, mode 0600 as Docker makes it."""
        import urllib.request

        from ketch.build.context import Source

        name = os.path.basename(url.split("?", 1)[0].rstrip("/")) or "index.html"
        path = os.path.join(scratch, "url-" + os.urandom(4).hex())
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
        except OSError as exc:
            raise NotFound(f"ADD {url}: {exc}") from None
        os.chmod(path, 0o600)
        return Source(path, name, os.stat(path))

    def _put(self, record: ContainerRecord, state: _State, picked: list[tuple[Source, bool]],
             heredocs: list[tuple[str, str]], target: str, into_dir: bool, chown: str, chmod: str,
             created_by: str, keep_owners: bool = False, config: dict[str, Any] | None = None) -> str:  # fmt: skip
        """Unpack the sources' tar into `record` at `target` and commit it. Files are root's, or
        `chown`'s, or with `keep_owners` (COPY --from) their own."""
        import tempfile

        from ketch.engine import filesystem

        with filesystem.rootfs(self.ctx, record) as rootfs:
            uid, gid = _owner(rootfs, chown) if chown else (0, 0)
            there = filesystem.kinds(rootfs, _parents(target))
        if there.get(target) == "dir":
            into_dir = True  # COPY file /existing/dir puts the file in it, as Docker does
        folder = target if into_dir else os.path.dirname(target)
        missing = [p for p in _parents(folder) if not there.get(p)] if folder != "/" else []
        with tempfile.TemporaryFile(dir=self.service.root) as spool:
            owner = None if keep_owners and not chown else (uid, gid)
            _write_tar(spool, picked, heredocs, target, into_dir, owner, chmod, missing, bool(chown))
            spool.seek(0)
            filesystem.copy_in(self.ctx, record, spool, "/")
        return self._commit(record, state, created_by, config)

    # --- the cache ------------------------------------------------------------------------------------

    def _cache_dir(self) -> str:
        return os.path.join(self.ctx.root, "build", "cache")

    def _hit(self, key: str) -> ImageRecord | None:
        """The cached result of a step, reported as such."""
        cached = self._cached(key)
        if cached is not None:
            self.progress.cached()
        return cached

    def _cached(self, key: str) -> ImageRecord | None:
        """The image a step with this key made before (unless --no-cache, or it was removed since)."""
        if self.options.no_cache:
            return None
        try:
            with open(os.path.join(self._cache_dir(), key), encoding="ascii") as f:
                image_id = f.read().strip()
            return self.service.get(image_id)
        except (FileNotFoundError, NotFound, InvalidArgument):
            return None

    def _remember(self, key: str, image_id: str) -> None:
        from ketch.files import atomic_write

        os.makedirs(self._cache_dir(), exist_ok=True)
        atomic_write(os.path.join(self._cache_dir(), key), image_id.encode(), 0o644)


def prune_cache(ctx: Context) -> tuple[int, list[str]]:
    """`builder prune`: forget every cached step; drop the untagged images only the cache kept.
    (entries, removed image IDs)."""
    import shutil

    from ketch.engine import images as engine_images

    directory = os.path.join(ctx.root, "build", "cache")
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        entries = []
    cached = set()
    for name in entries:
        try:
            with open(os.path.join(directory, name), encoding="ascii") as f:
                cached.add(f.read().strip())
        except FileNotFoundError:
            continue
    shutil.rmtree(directory, ignore_errors=True)
    service = ctx.images()
    removed = []
    for image in service.images.all():
        if image.id in cached and not image.names and not engine_images.containers_using(service, image):
            service.images.remove(image.id)
            removed.append(image.id)
    if removed:
        engine_images.collect_garbage(service)
    return len(entries), removed


class _Scratch:
    """A temporary directory made on first use and removed with the build step."""

    def __init__(self, stack: Any, parent: str) -> None:
        self.stack, self.parent, self._path = stack, parent, ""

    def path(self) -> str:
        if not self._path:
            import tempfile

            self._path = str(self.stack.enter_context(tempfile.TemporaryDirectory(dir=self.parent)))
        return self._path


# --- helpers ------------------------------------------------------------------------------------------


def _ignore_rules(context: str) -> Any:
    from ketch.build.ignore import IgnoreRules

    try:
        with open(os.path.join(context, ".dockerignore"), encoding="utf-8") as f:
            return IgnoreRules.parse(f.read())
    except FileNotFoundError:
        return IgnoreRules()


def _key(*parts: str) -> str:
    import hashlib

    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _json(value: Any) -> str:
    from ketch import jsonio

    return jsonio.dumps(value)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _no_history() -> Any:
    from ketch.engine.filesystem import Step

    return Step("")


def _full_name(tag: str) -> str:
    from ketch.oci.reference import Reference

    ref = Reference.parse(tag)
    if ref.digest:
        raise InvalidArgument(f"invalid tag {tag}: a tag cannot hold a digest")
    return str(ref)


def _labels_change(labels: dict[str, str]) -> str:
    return "LABEL " + " ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _octal(text: str) -> bool:
    return bool(text) and all(c in "01234567" for c in text) and int(text, 8) <= 0o7777


def _health_json(health: df.Health) -> dict[str, Any]:
    out: dict[str, Any] = {"Test": list(health.test)}
    for key, value in (("Interval", health.interval), ("Timeout", health.timeout),
                       ("StartPeriod", health.start_period), ("StartInterval", health.start_interval)):  # fmt: skip
        if value:
            out[key] = int(value * 1e9)
    if health.retries:
        out["Retries"] = health.retries
    return out


def _heredoc_script(line: str, heredocs: tuple[df.Heredoc, ...]) -> str:
    """RUN with heredocs: `RUN <<EOF` alone runs the body as the script (BuildKit's rule);
    otherwise the line with each body after it, for the shell to feed as here-documents."""
    if len(heredocs) == 1 and df.parse_heredoc(line.strip()) is not None:
        return heredocs[0].body
    script = line
    for doc in heredocs:
        script += f"\n{doc.body}{'' if doc.body.endswith(chr(10)) else chr(10)}{doc.name}"
    return script


def _owner(rootfs: str, chown: str) -> tuple[int, int]:
    """--chown's uid and gid: a numeric user alone is also the group (Docker's rule); a name
    alone takes its primary group from the image's /etc/passwd."""
    from ketch.engine import users

    user, sep, _group = chown.partition(":")
    if not sep and user.isdigit():
        return int(user), int(user)
    uid, gid = users.resolve_user(rootfs, chown)[:2]
    return uid, gid


def _is_archive(src: Source) -> bool:
    import stat

    if not stat.S_ISREG(src.st.st_mode):
        return False
    with open(src.path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return True
    return len(head) == 512 and head[257:262] == b"ustar"


def _parents(path: str) -> list[str]:
    """`/a/b/c` -> ["/a", "/a/b", "/a/b/c"]."""
    parts = [p for p in os.path.normpath(path).split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _copy_any(src: str, dst: str) -> None:
    import subprocess

    subprocess.run(["cp", "-a", "--", src, dst], check=True, capture_output=True)


def _chown_tree(top: str, owner: tuple[int, int]) -> None:
    os.chown(top, *owner, follow_symlinks=False)
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), *owner, follow_symlinks=False)


def _content_digest(picked: list[tuple[Source, bool]], extra: Any) -> str:
    from ketch.build.context import content_hash

    return content_hash([s for s, _ in picked], _json([extra, [a for _, a in picked]]))


def _write_tar(spool: BinaryIO, picked: list[tuple[Source, bool]], heredocs: list[tuple[str, str]], target: str,
               into_dir: bool, owner: tuple[int, int] | None, chmod: str, missing: list[str], chowned: bool) -> None:  # fmt: skip
    """The tar COPY/ADD unpacks at "/": the missing parent directories, then each source under
    `target` (a directory when `into_dir`), with Docker's owners and modes; archives ADD unpacks
    are expanded in place."""
    import io
    import stat
    import tarfile
    import time

    keep = owner is None  # COPY --from without --chown: each file keeps its owner
    uid, gid = owner or (0, 0)
    mode = int(chmod, 8) if chmod else None
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
        now = int(time.time())
        for path in missing:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            info.uid, info.gid = (uid, gid) if chowned else (0, 0)
            tar.addfile(info)
        base = target.lstrip("/")
        made = {p.lstrip("/") for p in missing}
        for src, unpack in picked:
            if unpack:
                _add_archive(tar, src, base, (uid, gid) if chowned else None)
                continue
            name = f"{base}/{src.name}" if into_dir else base
            for parent in _parents(os.path.dirname(name))[len(_parents(base)) :]:
                if parent.lstrip("/") not in made:  # --parents: the directories above a file
                    made.add(parent.lstrip("/"))
                    info = tarfile.TarInfo(parent.lstrip("/"))
                    info.type, info.mode, info.mtime, info.uid, info.gid = (
                        tarfile.DIRTYPE,
                        0o755,
                        now,
                        uid,
                        gid,
                    )
                    tar.addfile(info)
            info = tar.gettarinfo(src.path, arcname=name)
            info.uname, info.gname = "", ""
            if not keep:
                info.uid, info.gid = uid, gid
            if mode is not None and not stat.S_ISLNK(src.st.st_mode):
                info.mode = mode
            if info.isdir():
                made.add(name)
            if info.isreg():
                with open(src.path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
        for name, text in heredocs:
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{name}" if into_dir else base)
            info.size, info.mode, info.uid, info.gid, info.mtime = (
                len(data),
                0o644 if mode is None else mode,
                uid,
                gid,
                now,
            )
            tar.addfile(info, io.BytesIO(data))


def _add_archive(tar: Any, src: Source, base: str, owner: tuple[int, int] | None) -> None:
    """ADD of a local archive: its members under `base` (the unpacker checks every path later)."""
    import copy
    import tarfile

    with tarfile.open(src.path, mode="r:*") as archive:
        for original in archive:
            name = original.name.lstrip("/")
            member = copy.copy(original)
            member.name = f"{base}/{name}" if name not in ("", ".") else base
            if member.islnk():  # a hard link names a member of the archive: it moves with it
                member.linkname = f"{base}/{member.linkname.lstrip('/')}"
            if owner is not None:
                member.uid, member.gid = owner
            if member.isreg():
                tar.addfile(member, archive.extractfile(original))
            else:
                tar.addfile(member)
