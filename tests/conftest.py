"""Fixtures shared by the test modules (no test module imports another)."""

import os
import shutil
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import pytest

from tests.support.tiny import build_tiny_demo

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# the local catalogs of s3:// stores (labelgen.store.catalog) of this session only
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="labelgen-test-cache-")


@pytest.fixture(autouse=True)
def ray_only_when_slow(request, monkeypatch):
    """A test that starts Ray (minutes on 2 cores) is marked slow: others fail if they try."""
    if request.node.get_closest_marker("slow") is None:
        import ray

        def refuse(*args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} starts Ray: mark it @pytest.mark.slow")

        monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="session")
def offline_backbone():
    from labelgen.backbones import MobileNetV2

    return MobileNetV2()


@pytest.fixture(scope="session")
def dino_small_file(tmp_path_factory):
    """A DINOv2 ViT-S/14 checkpoint in timm's format (random weights: no hub here)."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, dynamic_img_size=True)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model


@pytest.fixture(scope="session")
def run():
    """`run(["labelgen.run", "key=value", ...])`: a `python -m` command as a user runs it, in
    a process of its own, its output captured."""

    def run(args, env=None, timeout=600):
        return subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    return run


@pytest.fixture(scope="session")
def ray_head():
    """One Ray head on loopback (`ray start --head`, started on first use) that runs join as
    they join a cluster, since a run's own local instance takes ~6 s of 2 cores to start and
    stop: `env` makes a command join it, `dashboard` is where jobs are submitted. Tests of
    the local instance itself (its console, its dashboard, a kill) keep `run`."""
    from cluster.local_up import OWNER, free_ports, take_down

    home = tempfile.mkdtemp(prefix="labelgen-test-head-")  # its own temp dir and ports: only it is stopped at the end
    gcs, dashboard, client, agent = free_ports(4)
    bin_dir = os.path.dirname(sys.executable)  # a job's `python` is this one, as on a node set up by `ray up`
    start = subprocess.run(
        [
            os.path.join(bin_dir, "ray"),
            "start",
            "--head",
            f"--temp-dir={home}/ray",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}",
            "--num-cpus=2",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", OWNER: home, "RAY_ADDRESS": ""},
    )
    assert start.returncode == 0, start.stderr[-3000:]
    # Ray turns token authentication on for a head: a client opts in and finds the token in ~/.ray
    yield SimpleNamespace(
        env={"RAY_ADDRESS": f"127.0.0.1:{gcs}", "RAY_AUTH_MODE": "token"}, dashboard=f"http://127.0.0.1:{dashboard}"
    )
    assert take_down(home) == []


@pytest.fixture(scope="session")
def run_on_head(run, ray_head):
    """`run`, its command joining the session's Ray head (`ray_head`)."""
    return lambda args, env=None, timeout=600: run(args, {**ray_head.env, **(env or {})}, timeout)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    return build_tiny_demo(str(tmp_path_factory.mktemp("demo")))


@pytest.fixture(scope="session")
def tiny_store(tiny_demo, tmp_path_factory, run_on_head):
    """`copy(dest)`: a store holding one committed run of the tiny demo (`first`, its features
    cached in the store), labelled once a session; each test takes a copy of its own (a
    store's SQLite catalog moves with its folder) and the original is never written."""
    from tests.support.tiny import tiny_demo_args

    store = str(tmp_path_factory.mktemp("tiny-store") / "store")
    out = run_on_head(["labelgen.run", *tiny_demo_args(tiny_demo), f"store={store}", "run_id=first"])
    assert out.returncode == 0, out.stderr[-3000:]

    def copy(dest) -> str:
        return str(shutil.copytree(store, dest))

    return copy


SECRET = "labelgen-test-secret-9f2c7e"


@pytest.fixture(scope="session")
def s3_secret():
    """The S3 server's secret key, which tests look for where it must never be."""
    return SECRET


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on 127.0.0.1, with a bucket; sets the AWS env
    so that this process and the pipelines it starts talk to it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "AKIALABELGENTEST",
        "AWS_SECRET_ACCESS_KEY": SECRET,  # distinctive: tests look for it where it must never be
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="labels")
    yield "s3://labels"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (.ci/run installs it): `postgres(name)` makes a
    database and returns its `catalog=postgres:...`; stop() and start() it to test outages."""
    from tests.faults.postgres import PostgresServer, bindir

    if bindir() is None:
        if os.environ.get("LABELGEN_POSTGRES_TESTS"):
            pytest.fail("LABELGEN_POSTGRES_TESTS is set but no PostgreSQL server is installed")
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
    with PostgresServer() as server:
        yield server
