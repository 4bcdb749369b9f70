"""SFTP delivery to a receiving platform: key login, pinned host key, atomic upload (temporary name, then
rename), data file first and manifest last (a receiver that sees the manifest sees a complete file), and a
receipt from the server (the sizes it reports for what it stored).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko

from exports.catalog import Target


class DeliveryError(RuntimeError):
    """The receiving server could not be reached or did not store the file; the message says which and why."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    remote_dir: str
    timeout: float

    @staticmethod
    def of(target: Target, state_dir: Path) -> Endpoint:
        port = os.environ.get(target.port_env)
        if not port:
            raise DeliveryError(f"{target.name}: {target.port_env} is not set; run exports through ./drc")

        def local(path: str) -> Path:
            return Path(path.format(state=state_dir))

        return Endpoint(
            target.host,
            int(port),
            target.user,
            local(target.key_file),
            local(target.known_hosts),
            target.remote_dir,
            target.timeout_seconds,
        )


def connect(endpoint: Endpoint) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if not endpoint.known_hosts.exists():
        raise DeliveryError(f"no pinned host key {endpoint.known_hosts}: start the SFTP server with ./drc start")
    client.load_host_keys(str(endpoint.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            endpoint.host,
            endpoint.port,
            username=endpoint.user,
            key_filename=str(endpoint.key_file),
            timeout=endpoint.timeout,
            banner_timeout=endpoint.timeout,
            auth_timeout=endpoint.timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        raise DeliveryError(
            f"cannot log in to sftp://{endpoint.user}@{endpoint.host}:{endpoint.port}: {type(exc).__name__}: {exc}"
        ) from exc
    return client


def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    current = ""
    for part in path.strip("/").split("/"):
        current += "/" + part
        try:
            if not stat.S_ISDIR(sftp.stat(current).st_mode):
                raise DeliveryError(f"{current} exists on the server and is not a folder")
        except FileNotFoundError:
            sftp.mkdir(current)


def upload(endpoint: Endpoint, remote_folder: str, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Put the files (in order) under remote_dir/remote_folder, each atomically; return the server's receipt."""
    client = connect(endpoint)
    try:
        sftp = client.open_sftp()
        folder = posixpath.join(endpoint.remote_dir, remote_folder)
        _makedirs(sftp, folder)
        stored = []
        for name, content in files:
            final = posixpath.join(folder, name)
            temporary = posixpath.join(folder, f".{name}.part")
            with sftp.open(temporary, "wb") as handle:
                handle.set_pipelined(True)
                handle.write(content)
            sftp.posix_rename(temporary, final)
            size = sftp.stat(final).st_size
            if size != len(content):
                raise DeliveryError(f"{final}: the server stored {size} bytes of {len(content)}")
            stored.append({"path": final, "bytes": size})
        key = client.get_transport().get_remote_server_key()
        return {
            "server": f"sftp://{endpoint.user}@{endpoint.host}:{endpoint.port}",
            "files": stored,
            "host_key": f"{key.get_name()} {key.fingerprint}",
            "confirmed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    except (OSError, paramiko.SSHException) as exc:
        raise DeliveryError(
            f"sftp://{endpoint.host}:{endpoint.port}/{remote_folder}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        client.close()
