"""Key rotation without a restart: `KeyPool.reload` (kept keys keep their state, new keys
join with their own limiter, removed keys leave the rotation while a call holding one keeps
it) and `KeyFileWatcher` (a changed key file reloads its provider's pool; a broken file
leaves the keys as they are)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.container import make_container
from app.core.clock import ManualClock
from app.core.settings import ProviderName, Settings
from app.modules.ai.key_files import KeyFileWatcher
from app.modules.ai.providers import KeyPool
from app.modules.ai.providers.keys import key_id
from app.modules.ai.resilience.guard import ProviderGuards


def _keys(*names: str) -> list[SecretStr]:
    return [SecretStr(f"key-number-{name}") for name in names]


def _ids(pool: KeyPool) -> list[str]:
    return [key.secret.removeprefix("key-number-") for key in pool]


def test_reload_adds_keeps_and_removes() -> None:
    clock = ManualClock()
    pool = KeyPool(_keys("a", "b"), clock)
    b = list(pool)[1]
    pool.rest(b, 60)
    change = pool.reload(_keys("b", "c"))
    assert _ids(pool) == ["b", "c"]
    assert change.added == (key_id("key-number-c"),)
    assert change.removed == (key_id("key-number-a"),)
    assert next(iter(pool)) is b  # the same key object: its rest is kept
    assert pool.state(b).value == "resting"
    assert [pool.acquire().secret for _ in range(2)] == ["key-number-c"] * 2  # type: ignore[union-attr]


def test_new_keys_get_fresh_indices_and_their_own_limiter() -> None:
    clock = ManualClock()
    pool = KeyPool(_keys("a"), clock)
    made: list[str] = []

    def limiter(ident: str) -> object:
        made.append(ident)
        return object()

    pool.new_limiter = limiter  # type: ignore[assignment]
    pool.reload(_keys("a", "b", "b"))  # listed twice: once
    a, b = list(pool)
    assert (a.index, b.index) == (0, 1)
    assert a.limiter is None  # its limiter is the guard's, by index
    assert b.limiter is not None
    assert made == [b.id]
    pool.reload(_keys("c"))
    pool.reload(_keys("b"))  # back again: a new key, never an index used before
    assert [k.index for k in pool] == [3]


def test_a_call_holding_a_removed_key_keeps_it() -> None:
    clock = ManualClock()
    pool = KeyPool(_keys("old"), clock)
    held = pool.acquire()
    assert held is not None
    pool.reload(_keys("new"))
    assert held.secret == "key-number-old"  # the call in flight still sends it
    assert pool.acquire().secret == "key-number-new"  # type: ignore[union-attr]
    pool.rest(held, 30)  # its 429 arriving late touches nothing in the pool
    assert pool.available() == 1


def test_round_robin_follows_the_new_list() -> None:
    pool = KeyPool(_keys("a", "b", "c"), ManualClock())
    pool.acquire()
    pool.acquire()
    pool.reload(_keys("c", "d"))
    assert [pool.acquire().secret[-1] for _ in range(4)] == ["c", "d", "c", "d"]  # type: ignore[union-attr]


def test_an_empty_reload_is_refused_and_changes_nothing() -> None:
    pool = KeyPool(_keys("a"), ManualClock())
    with pytest.raises(ValueError, match="at least one key"):
        pool.reload([])
    assert _ids(pool) == ["a"]


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: str) -> tuple[Settings, Path]:
    path = tmp_path / "groq_keys"
    path.write_text(keys)
    monkeypatch.setenv("GROQ_API_KEYS_FILE", str(path))
    monkeypatch.setenv("GROQ_API_KEY", "gsk-plain-variable")  # stays: it cannot change
    return Settings(ai_cache_enabled=False), path


def _touch(path: Path, text: str) -> None:
    """Rewrite and move the mtime on, as a second write in the same clock tick would not."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


async def test_a_changed_file_reloads_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, path = _settings(tmp_path, monkeypatch, "gsk-one\ngsk-two\n")
    container = make_container(settings)
    try:
        guards = await container.get(ProviderGuards)
        watcher = KeyFileWatcher(settings, guards, ManualClock())
        pool = guards[ProviderName.GROQ].keys
        assert [k.secret for k in pool] == ["gsk-plain-variable", "gsk-one", "gsk-two"]
        assert watcher.check() == []  # nothing changed yet
        _touch(path, "gsk-two\ngsk-three\n")
        assert watcher.check() == [ProviderName.GROQ]
        assert [k.secret for k in pool] == ["gsk-plain-variable", "gsk-two", "gsk-three"]
        assert watcher.check() == []
        # A new key is rate limited like the others (GROQ_RPM_PER_KEY), by its own limiter.
        (new,) = [k for k in pool if k.secret == "gsk-three"]
        assert new.limiter is not None
        for broken in ("", "\n", "gsk-a\x00b\n"):
            _touch(path, broken)
            assert watcher.check() == []  # refused: the keys in use stay
            assert [k.secret for k in pool] == ["gsk-plain-variable", "gsk-two", "gsk-three"]
        path.unlink()
        assert watcher.check() == []
        assert len(pool) == 3
    finally:
        await container.close()


async def test_sighup_reloads_when_the_loop_takes_signals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reload_all is what SIGHUP runs: it reads the files even when the stamp did not move
    (a file rewritten within the same mtime tick)."""
    settings, path = _settings(tmp_path, monkeypatch, "gsk-one\n")
    container = make_container(settings)
    try:
        guards = await container.get(ProviderGuards)
        watcher = KeyFileWatcher(settings, guards, ManualClock())
        stamp = path.stat().st_mtime_ns
        path.write_text("gsk-nine\n")
        os.utime(path, ns=(stamp, stamp))
        watcher.reload_all()
        assert [k.secret for k in guards[ProviderName.GROQ].keys][-1] == "gsk-nine"
    finally:
        await container.close()


async def test_the_watcher_polls_on_the_injected_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, path = _settings(tmp_path, monkeypatch, "gsk-one\n")
    container = make_container(settings)
    try:
        guards = await container.get(ProviderGuards)
        clock = ManualClock()
        watcher = KeyFileWatcher(settings, guards, clock, poll_s=5.0)
        watcher.start()
        _touch(path, "gsk-two\n")
        # ManualClock.sleep moves the clock and yields once: a few loop turns are polls.
        for _ in range(5):
            await clock.sleep(0)
        await watcher.aclose()
        assert [k.secret for k in guards[ProviderName.GROQ].keys][-1] == "gsk-two"
        assert clock.monotonic() >= 1000.0 + 5.0
    finally:
        await container.close()


def test_no_key_files_no_watching() -> None:
    watcher = KeyFileWatcher(Settings(), ProviderGuards(), ManualClock(), environ={})
    assert watcher.files == {}
