"""Local workers forked from the zygote, each confined to its core set: real 2-worker jobs (whose
workers report their parent and cores), the zygote's lifecycle, and the error paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.runners.worker import statesampler

from datarax_beam import _beam_worker
from datarax_beam.runners import options, zygote
from datarax_beam.runners.options import build_options, make_runner, worker_core_sets

pytestmark = pytest.mark.skipif(not zygote.enabled({}), reason="needs fork and Unix sockets (POSIX)")


def _facts(tmp_path, flags):
    tmp_path.mkdir()
    out = str(tmp_path / "facts")
    opts = build_options(flags)
    with beam.Pipeline(runner=make_runner(opts), options=opts) as p:
        _ = (p | beam.Create(range(8)) | beam.Reshuffle()
             | beam.Map(lambda _: f"{os.getpid()} {os.getppid()} "
                                  f"{','.join(map(str, sorted(os.sched_getaffinity(0))))} "
                                  f"{statesampler.get_current_tracker().sampling_period_ms}")
             | beam.io.WriteToText(out))
    rows = set()
    for name in os.listdir(tmp_path):
        if name.startswith("facts"):
            with open(tmp_path / name) as f:
                rows.update(tuple(line.split()) for line in f if line.strip())
    return rows


def test_workers_are_forked_from_one_zygote_and_take_their_cores(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    first = _facts(tmp_path / "a", options.multi_process(2, cores_per_worker=1))
    zygote_pid = zygote._zygote.process.pid
    assert {parent for _, parent, _, _ in first} == {str(zygote_pid)}  # forked, not started by Beam
    assert all(len(c.split(",")) == 1 and int(c) in cores for _, _, c, _ in first)
    if len(cores) > 1 and len({pid for pid, _, _, _ in first}) == 2:  # both workers got elements
        assert len({c for _, _, c, _ in first}) == 2  # ... on different cores
    second = _facts(tmp_path / "b", options.multi_process(1))
    assert {parent for _, parent, _, _ in second} == {str(zygote_pid)}  # the same zygote, still warm
    assert {c for _, _, c, _ in second} == {",".join(map(str, cores))}  # one worker: every core
    # bundles end without waiting up to 200 ms for Beam's state sampler
    assert {period for *_, period in first | second} == {str(_beam_worker.STATE_SAMPLING_MS)}


def test_a_changed_environment_gets_a_fresh_zygote(monkeypatch):
    first = zygote.start()
    old = zygote._zygote.process
    assert zygote.start() == first  # unchanged: kept
    monkeypatch.setenv("DATARAX_BEAM_TEST_ZYGOTE_KEY", "changed")
    assert zygote.start() != first
    assert old.wait(timeout=30) is not None  # the stale one was stopped


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(entry))
            except OSError:
                pass
    return out


def _wait_for(condition, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_killed_client_takes_its_worker_with_it():
    path = zygote.start()
    zygote_pid = zygote._zygote.process.pid
    before = _children(zygote_pid)
    # a worker with a control address nobody serves: it waits to connect, until killed
    env = dict(os.environ, CONTROL_API_SERVICE_DESCRIPTOR='url: "localhost:9"', WORKER_ID="worker_0")
    client = subprocess.Popen([sys.executable, zygote.CLIENT, path], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker = _wait_for(lambda: _children(zygote_pid) - before, "the forked worker")
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
    _wait_for(lambda: not (worker & _children(zygote_pid)), "the worker to be killed")


def test_a_failing_worker_fails_its_client():
    path = zygote.start()
    env = {k: v for k, v in os.environ.items() if "SERVICE_DESCRIPTOR" not in k}  # no control API
    done = subprocess.run([sys.executable, zygote.CLIENT, path], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0


def test_a_client_without_a_zygote_says_so(tmp_path):
    done = subprocess.run([sys.executable, zygote.CLIENT, str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "no worker zygote at" in done.stderr


def test_the_zygote_can_be_turned_off():
    assert zygote.enabled({})
    assert not zygote.enabled({"DATARAX_BEAM_ZYGOTE": "0"})


def test_core_sets():
    assert worker_core_sets(2, cores=[0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert worker_core_sets(4, cores=[0, 1]) == [[0], [1], [0], [1]]
    assert worker_core_sets(2, 3, cores=[0, 1, 2, 3]) == [[0, 1, 2], [3, 0, 1]]
    assert worker_core_sets(1, 8, cores=[4, 5]) == [[4, 5]]  # never more than there are
    env = {_beam_worker.CORES: "0;1,2", "WORKER_ID": "worker_3"}
    assert _beam_worker.core_set(env) == frozenset({1, 2})
    assert _beam_worker.core_set({_beam_worker.CORES: "7"}) == frozenset({7})  # no id: the first
    assert _beam_worker.core_set({}) is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_cores_per_worker_is_refused(bad):
    with pytest.raises(ValueError, match="cores_per_worker"):
        options.multi_process(2, cores_per_worker=bad)
    with pytest.raises(ValueError, match="cores_per_worker"):
        worker_core_sets(2, bad, cores=[0, 1])


def test_a_bad_core_list_names_the_variable_and_value():
    with pytest.raises(ValueError, match=r"DATARAX_BEAM_WORKER_CORES.*'0;x'"):
        _beam_worker.core_set({_beam_worker.CORES: "0;x"})


def test_the_worker_command_carries_the_core_sets(monkeypatch):
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    from datarax_beam.runners.quiet import quiet_workers

    proto = beam_runner_api_pb2.Pipeline()
    env = proto.components.environments["beam"]
    env.urn = python_urns.SUBPROCESS_SDK
    env.payload = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main".encode()
    monkeypatch.setattr("datarax_beam.runners.options._available_cores", lambda: [0, 1, 2, 3])
    assert quiet_workers(proto, build_options(options.multi_process(2))) == 1
    command = env.payload.decode()
    assert command.startswith("DATARAX_BEAM_WORKER_CORES='0,1;2,3' ") and zygote.CLIENT in command


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # the child only stops and exits
def test_a_fork_of_the_driver_leaves_the_zygote_alone():
    zygote.start()
    process = zygote._zygote.process
    pid = os.fork()
    if pid == 0:  # e.g. a multiprocessing child exiting through its atexit handlers
        zygote.stop()
        os._exit(0)
    os.waitpid(pid, 0)
    assert process.poll() is None  # still serving this driver


def _compile_in_workers(tmp_path):
    """A 2-worker job whose workers each jit one small function; the values they computed."""
    tmp_path.mkdir()
    out = str(tmp_path / "values")
    opts = build_options(options.multi_process(2, cores_per_worker=1))

    def compute(i):
        import jax
        import numpy as np

        return f"{i} {float(jax.jit(lambda x: x * 3 + 1)(np.float32(i)))}"

    with beam.Pipeline(runner=make_runner(opts), options=opts) as p:
        _ = p | beam.Create(range(4)) | beam.Reshuffle() | beam.Map(compute) | beam.io.WriteToText(out)
    values = set()
    for name in os.listdir(tmp_path):
        with open(tmp_path / name) as f:
            values.update(line.strip() for line in f if line.strip())
    return values


def test_a_later_jobs_workers_load_what_earlier_workers_compiled(tmp_path):
    zygote.stop()  # a zygote of its own: its cache starts empty
    assert _compile_in_workers(tmp_path / "a") == {f"{i} {3.0 * i + 1}" for i in range(4)}
    cache = zygote._zygote.compile_cache
    entries = [n for n in os.listdir(cache) if n.endswith("-cache")]
    assert entries  # the first job's workers compiled and stored the program
    stamps = {n: open(os.path.join(cache, n), "rb").read() for n in os.listdir(cache) if n.endswith("-atime")}
    assert _compile_in_workers(tmp_path / "b") == {f"{i} {3.0 * i + 1}" for i in range(4)}
    after = {n: open(os.path.join(cache, n), "rb").read() for n in stamps}
    assert any(after[n] != stamps[n] for n in stamps)  # read back (JAX stamps an entry it loads)
    assert [n for n in os.listdir(cache) if n.endswith("-cache")] == entries  # nothing compiled anew
    directory = zygote._zygote.dir
    zygote.stop()
    assert not os.path.exists(directory)  # the cache goes with its zygote


@pytest.mark.parametrize("user_cache", [True, False])
def test_a_workers_compile_cache_never_replaces_the_users(tmp_path, user_cache):
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if user_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "users")
    code = ("import jax; from datarax_beam._beam_worker import use_compile_cache; "
            f"print(use_compile_cache({str(tmp_path / 'ours')!r}), jax.config.jax_compilation_cache_dir)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    used, directory = out.stdout.split()
    assert used == str(not user_cache)
    assert directory == str(tmp_path / ("users" if user_cache else "ours"))
