"""Where the client finds lkps and its Entra credential: `LKPS_CLIENT_*` variables, or a `lkps dev` state.

    LKPS_CLIENT_URL            lkps base URL, e.g. https://lkps.example.com
    LKPS_CLIENT_TENANT_ID      the Entra tenant GUID
    LKPS_CLIENT_ID             your application's client id
    LKPS_CLIENT_SECRET(_FILE)  its client secret, or instead
    LKPS_CLIENT_CERTIFICATE    a PEM file with its private key and certificate
                               (LKPS_CLIENT_CERTIFICATE_PASSWORD(_FILE) if the key is encrypted)
    LKPS_CLIENT_SCOPE          lkps's App ID URI + /.default, e.g. api://lkps/.default
    LKPS_CLIENT_AUTHORITY      default https://login.microsoftonline.com
    LKPS_CLIENT_CA_BUNDLE      PEM file trusted instead of the system store (Entra and lkps)

A `lkps dev` state directory holds all of this for its demo backend service and demo agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from lkps.client import LkpsClient, plaintext_problem
from lkps.credentials import DEFAULT_AUTHORITY, EntraCredential

DEV_DEFAULT_URL = "http://127.0.0.1:8000"
Role = Literal["backend", "agent"]


class ClientConfigError(Exception):
    """The client is not configured; `problems` lists every missing or conflicting setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class ClientConfig:
    url: str
    tenant_id: str
    client_id: str
    scope: str
    authority: str = DEFAULT_AUTHORITY
    client_secret: str | None = field(default=None, repr=False)
    certificate: Path | None = None
    certificate_password: str | None = field(default=None, repr=False)
    ca_bundle: Path | None = None

    def client(self) -> LkpsClient:
        try:
            credential = EntraCredential(
                tenant_id=self.tenant_id,
                client_id=self.client_id,
                scope=self.scope,
                client_secret=self.client_secret,
                certificate=self.certificate,
                certificate_password=self.certificate_password,
                authority=self.authority,
                ca_bundle=self.ca_bundle,
            )
        except (OSError, ValueError) as exc:  # an unreadable or unusable certificate file
            raise ClientConfigError([str(exc)]) from exc
        return LkpsClient(self.url, credential, ca_bundle=self.ca_bundle)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ClientConfig:
        """Read `LKPS_CLIENT_*`; raise ClientConfigError naming everything that is missing or ambiguous."""
        problems: list[str] = []

        def value(name: str) -> str | None:
            direct = (environ.get(name) or "").strip() or None
            file_name = (environ.get(f"{name}_FILE") or "").strip() or None
            if file_name is None:
                return direct
            if direct is not None:
                problems.append(f"{name} and {name}_FILE are both set; set only one")
                return None
            try:
                return Path(file_name).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                problems.append(f"{name}_FILE: cannot read {file_name!r} ({exc.strerror or exc})")
                return None

        def required(name: str) -> str:
            found = value(name)
            if found is None:
                problems.append(f"{name} is required")
            return found or ""

        url, tenant_id, client_id, scope = (
            required(name)
            for name in ("LKPS_CLIENT_URL", "LKPS_CLIENT_TENANT_ID", "LKPS_CLIENT_ID", "LKPS_CLIENT_SCOPE")
        )
        if url and (problem := _url_problem(url)):
            problems.append(problem)
        secret, certificate = value("LKPS_CLIENT_SECRET"), value("LKPS_CLIENT_CERTIFICATE")
        if (secret is None) == (certificate is None):
            problems.append("set exactly one of LKPS_CLIENT_SECRET(_FILE) and LKPS_CLIENT_CERTIFICATE")
        ca_bundle = value("LKPS_CLIENT_CA_BUNDLE")
        config = cls(
            url=url,
            tenant_id=tenant_id,
            client_id=client_id,
            scope=scope,
            authority=value("LKPS_CLIENT_AUTHORITY") or DEFAULT_AUTHORITY,
            client_secret=secret,
            certificate=Path(certificate) if certificate else None,
            certificate_password=value("LKPS_CLIENT_CERTIFICATE_PASSWORD"),
            ca_bundle=Path(ca_bundle) if ca_bundle else None,
        )
        if problems:
            raise ClientConfigError(problems)
        return config

    @classmethod
    def from_dev_state(cls, state_dir: Path, role: Role) -> ClientConfig:
        """The demo backend service's (or demo agent's) real client credentials from a `lkps dev` state."""
        if not (state_dir / "authority").is_file():
            raise ClientConfigError([f"no `lkps dev` state in {state_dir}: start `lkps dev` first"])
        # Dev-only import: a production client never loads the embedded issuer, and the light client
        # distribution does not have it (`lkps dev` runs where the server is installed).
        try:
            from authz.dev_issuer import DEMO_AGENT, DEMO_BACKEND, DevState  # noqa: PLC0415
        except ModuleNotFoundError:
            raise ClientConfigError(
                [
                    f"{state_dir} is a `lkps dev` state: use it where the lkps server is installed (pip install lkps)"
                ]
            ) from None

        state = DevState(state_dir)
        client = state.client(DEMO_AGENT if role == "agent" else DEMO_BACKEND)
        url_file = state_dir / "url"
        return cls(
            url=url_file.read_text().strip() if url_file.is_file() else DEV_DEFAULT_URL,
            tenant_id=state.identity.tenant_id,
            client_id=client.client_id,
            scope=f"{state.identity.api_uri}/.default",
            authority=(state_dir / "authority").read_text().strip(),
            client_secret=client.secret,
            ca_bundle=state.ca_path,
        )

    def with_url(self, url: str | None) -> ClientConfig:
        if url is None:
            return self
        if problem := _url_problem(url):
            raise ClientConfigError([problem])
        return replace(self, url=url)


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be lkps's base URL (a typo would otherwise surface as "cannot be reached")."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what refuses `host:notaport`
    except ValueError as exc:
        return f"LKPS_CLIENT_URL (--url) {url!r} is not a URL ({exc})"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"LKPS_CLIENT_URL (--url) {url!r} must be an http:// or https:// URL, e.g. https://lkps.example.com"
    if problem := plaintext_problem(url):
        return f"LKPS_CLIENT_URL (--url) {problem}"
    return None
