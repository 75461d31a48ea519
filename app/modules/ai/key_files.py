"""Provider keys rotated without a restart: when a key file (`<P>_API_KEY_FILE`,
`<P>_API_KEYS_FILE`) changes, or on SIGHUP, each provider's key pool takes the new list
(`KeyPool.reload`): new keys serve the next calls, removed keys finish the calls already
holding them and are then gone.

The files are polled (their mtime, size and inode, every `KEY_FILE_POLL_S`) rather than
watched with inotify: Kubernetes replaces a mounted Secret by swapping a symlink, Docker
bind mounts hide events, and a poll every few seconds costs nothing.

A file that cannot be used (unreadable, empty, half-written) leaves the keys as they are and
is logged: a broken rotation must not take every key away. Keys given as plain variables
(`<P>_API_KEY`, `<P>_API_KEYS`) cannot change while the process runs and stay as they are.
A provider configured without keys at start has no guard; keys for it need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from app.core.clock import Clock
from app.core.secret_files import FILE_SUFFIX, SecretFileError, read_secret_file
from app.core.settings import ProviderName, Settings
from app.modules.ai.resilience.guard import ProviderGuards

log = logging.getLogger("app.ai.keys")

# How often the key files are looked at (a stat each): a rotated key is in use within this.
KEY_FILE_POLL_S = 5.0

_PREFIX = {
    ProviderName.GROQ: "GROQ_",
    ProviderName.GEMINI: "GEMINI_",
    ProviderName.AZURE: "AZURE_OPENAI_",
    ProviderName.OPENAI: "OPENAI_",
}

Stamp = tuple[int, int, int] | None  # (mtime ns, size, inode); None: missing


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """A provider's key files: the single-key one and the list one (either may be None)."""

    single: Path | None
    many: Path | None

    def paths(self) -> list[Path]:
        return [p for p in (self.single, self.many) if p is not None]


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()  # follows the symlink Kubernetes swaps
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class KeyFileWatcher:
    """Reloads each provider's keys from its files when they change (poll) or on SIGHUP."""

    def __init__(
        self,
        settings: Settings,
        guards: ProviderGuards,
        clock: Clock,
        *,
        environ: Mapping[str, str] | None = None,
        poll_s: float = KEY_FILE_POLL_S,
    ) -> None:
        self._settings = settings
        self._guards = guards
        self._clock = clock
        self._poll_s = poll_s
        env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
        self.files: dict[ProviderName, KeyFiles] = {}
        for name in guards:
            prefix = _PREFIX[name]
            single = env.get(f"{prefix}API_KEY{FILE_SUFFIX}")
            many = env.get(f"{prefix}API_KEYS{FILE_SUFFIX}")
            if single or many:
                self.files[name] = KeyFiles(
                    Path(single) if single else None, Path(many) if many else None
                )
        self._stamps = {path: _stamp(path) for f in self.files.values() for path in f.paths()}
        self._task: asyncio.Task[None] | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None

    def check(self) -> list[ProviderName]:
        """Reload the providers whose files changed since the last look; the reloaded ones."""
        changed: list[ProviderName] = []
        for name, files in self.files.items():
            stamps = {path: _stamp(path) for path in files.paths()}
            if any(self._stamps.get(path) != stamp for path, stamp in stamps.items()):
                self._stamps.update(stamps)
                if self.reload(name):
                    changed.append(name)
        return changed

    def reload_all(self) -> None:
        """Every provider with key files, changed or not (SIGHUP)."""
        for name, files in self.files.items():
            self._stamps.update({path: _stamp(path) for path in files.paths()})
            self.reload(name)

    def reload(self, name: ProviderName) -> bool:
        """Read `name`'s key files and give its pool the keys; False when they could not be
        used (logged; the keys in use stay)."""
        files = self.files[name]
        section = self._settings.provider(name)
        prefix = _PREFIX[name]
        try:
            single: SecretStr | None = section.api_key
            many: list[SecretStr] = list(section.api_keys)
            if files.single is not None:
                variable = f"{prefix}API_KEY{FILE_SUFFIX}"
                single = SecretStr(read_secret_file(variable, str(files.single), "single"))
            if files.many is not None:
                variable = f"{prefix}API_KEYS{FILE_SUFFIX}"
                text = read_secret_file(variable, str(files.many), "list")
                many = [SecretStr(part) for part in text.split(",")]
            keys = section.model_copy(update={"api_key": single, "api_keys": many}).all_keys()
            change = self._guards[name].keys.reload(keys)
        except (SecretFileError, ValueError) as exc:
            log.error("key reload failed, keys unchanged provider=%s error=%s", name.value, exc)
            return False
        if change:
            log.warning(
                "keys reloaded provider=%s added=%s removed=%s",
                name.value,
                ",".join(change.added) or "-",
                ",".join(change.removed) or "-",
            )
        return True

    def start(self) -> None:
        """Poll in the background, and reload on SIGHUP where this loop can take signals
        (the main thread of `serve`; never in a test's loop thread or on Windows)."""
        if not self.files:
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._poll(), name="key-files")
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self.reload_all)
            self._signal_loop = loop

    async def _poll(self) -> None:
        while True:
            await self._clock.sleep(self._poll_s)
            self.check()

    async def aclose(self) -> None:
        if self._signal_loop is not None:
            self._signal_loop.remove_signal_handler(signal.SIGHUP)
            self._signal_loop = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
