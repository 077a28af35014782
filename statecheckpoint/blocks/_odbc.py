"""ODBC plumbing of the SQL Server store: connection strings, URLs, pyodbc's lazy
import and the configuration errors that retrying cannot fix."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from statecheckpoint.errors import InvalidInputError, StateCheckpointError

MISSING_DRIVER_STATES = {"IM002", "IM003"}
LOGIN_STATES = {"28000"}


def import_pyodbc() -> Any:
    """Imports pyodbc, or says which package is missing (not worth retrying)."""
    try:
        import pyodbc
    except ImportError as exc:
        if "libodbc" in str(exc):
            raise StateCheckpointError(
                f"pyodbc cannot load unixODBC ({exc}); install it "
                "(Debian/Ubuntu: apt-get install unixodbc)"
            ) from exc
        raise StateCheckpointError(
            "the SQL Server store needs pyodbc: "
            "pip install 'statecheckpoint[sqlserver]'"
        ) from exc
    return pyodbc


def odbc_value(value: str) -> str:
    """Quotes a connection-string value when it holds ``;``, braces or edge spaces."""
    if value and not any(c in value for c in ";{}=") and value.strip() == value:
        return value
    return "{" + value.replace("}", "}}") + "}"


def parse_connection_string(text: str) -> dict[str, str]:
    """Splits an ODBC connection string into lower-cased keys and their values.

    Braced values may hold ``;`` and ``}}`` stands for ``}``; malformed parts are
    skipped (the driver is the judge of them).
    """
    pairs: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        eq = text.find("=", pos)
        if eq < 0:
            break
        key = text[pos:eq].strip().lower()
        pos = eq + 1
        if text[pos : pos + 1] == "{":
            chars, pos = [], pos + 1
            while pos < end:
                if text[pos] == "}":
                    if text[pos + 1 : pos + 2] == "}":
                        chars.append("}")
                        pos += 2
                        continue
                    pos += 1
                    break
                chars.append(text[pos])
                pos += 1
            value = "".join(chars)
            semi = text.find(";", pos)
            pos = end if semi < 0 else semi + 1
        else:
            semi = text.find(";", pos)
            stop = end if semi < 0 else semi
            value = text[pos:stop].strip()
            pos = stop + 1
        if key:
            pairs[key] = value
    return pairs


def is_freetds(driver: str) -> bool:
    """Tells whether a driver name or library path is FreeTDS's."""
    name = driver.lower()
    return "freetds" in name or "libtdsodbc" in name


def build_connection_string(
    *,
    driver: str,
    server: str,
    port: int,
    database: str | None,
    user: str | None,
    password: str | None,
    trust_server_certificate: bool,
) -> str:
    """Builds a DSN-less connection string for Microsoft's driver or FreeTDS."""
    named_instance = "\\" in server
    parts = [("DRIVER", driver)]
    if is_freetds(driver):
        parts.append(("SERVER", server))
        if not named_instance:
            parts.append(("PORT", str(port)))
        # 7.4 carries NVARCHAR(MAX) and VARBINARY(MAX) as such; older versions
        # fall back to the legacy text types.
        parts += [("TDS_Version", "7.4"), ("ClientCharset", "UTF-8")]
    else:
        parts.append(("SERVER", server if named_instance else f"{server},{port}"))
        parts.append(("Encrypt", "yes"))
        parts.append(
            ("TrustServerCertificate", "yes" if trust_server_certificate else "no")
        )
    if database:
        parts.append(("DATABASE", database))
    if user:
        parts.append(("UID", user))
    if password is not None:
        parts.append(("PWD", password))
    parts.append(("APP", "statecheckpoint"))
    return ";".join(f"{key}={odbc_value(value)}" for key, value in parts)


_TRUE = {"1", "true", "yes", "on"}


def settings_from_url(url: str) -> dict[str, Any]:
    """Turns ``mssql://user:password@host:port/database?driver=...`` into fields.

    Query keys: ``driver``, ``trust_server_certificate`` (yes/no), ``schema``
    (the SQL schema), ``chunk_bytes``. Returns plain values; the caller wraps the
    password as a secret.

    Raises:
        InvalidInputError: For another scheme or a missing host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mssql", "sqlserver"):
        raise InvalidInputError(
            "SQL Server URL: expected mssql://user:password@host:port/database"
            f"?driver=..., got scheme {parts.scheme!r}"
        )
    if not parts.hostname:
        raise InvalidInputError("SQL Server URL: the host is missing")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    settings: dict[str, Any] = {"server": unquote(parts.hostname)}
    if parts.port:
        settings["port"] = parts.port
    database = unquote(parts.path.lstrip("/"))
    if database:
        settings["database"] = database
    if parts.username:
        settings["user"] = unquote(parts.username)
    if parts.password is not None:
        settings["password"] = unquote(parts.password)
    if "driver" in query:
        settings["driver"] = query["driver"]
    if "trust_server_certificate" in query:
        settings["trust_server_certificate"] = (
            query["trust_server_certificate"].lower() in _TRUE
        )
    if "schema" in query:
        settings["schema_name"] = query["schema"]
    if "chunk_bytes" in query:
        settings["chunk_bytes"] = int(query["chunk_bytes"])
    return settings


def via(driver: str | None) -> str:
    return f"driver {driver!r}" if driver else "the DSN's driver"


def installed(driver: str, installed: list[str]) -> bool:
    # A path to the driver's library is valid too; only names are checked.
    if "/" in driver:
        return True
    return driver.strip("{}").lower() in {name.lower() for name in installed}


def missing_driver(
    where: str, driver: str | None, installed: list[str], detail: str = ""
) -> StateCheckpointError:
    found = ", ".join(repr(name) for name in installed) or "none"
    why = f" ({detail})" if detail else ""
    if driver is None:
        problem = f"its ODBC data source or driver is not configured{why}"
    else:
        problem = f"ODBC driver {driver!r} is not installed{why}"
    return StateCheckpointError(
        f"cannot connect to SQL Server at {where}: {problem}; installed drivers: "
        f"{found}. Name one of them as the driver, or install one: Microsoft's "
        "msodbcsql18, or FreeTDS (Debian/Ubuntu: apt-get install unixodbc tdsodbc, "
        "which registers 'FreeTDS')"
    )
