"""Single-field format rules: GKE/GCP/Kubernetes names, zones, labels, regexes, timezones.

Each check is a plain function that returns the value or raises `ValueError` with a message that echoes
the bad value and says what would be accepted; `blocks.spec` attaches them to fields with
`AfterValidator`, so pydantic reports the field's dotted path in front of the message.
"""

from __future__ import annotations

import re
import zoneinfo

from blocks.labels import LEASE_EXPIRY_KEY, MANAGED_BY_KEY, RUN_ID_KEY, STACK_KEY

# GKE cluster and node pool names: "must start with a lowercase letter followed by up to 39
# lowercase letters, numbers, or hyphens, and can't end with a hyphen" (gcloud's own error text).
GKE_NAME_MAX_LEN = 40
_GKE_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")
# RFC 1035 label, as Kubernetes requires for Service names; KubeRay derives "<name>-head-svc" and
# "<name>-serve-svc" from the RayService name, and a RayCluster "<name>-<5 chars>", so we keep it
# short enough that every derived name stays a valid 63-character label.
K8S_NAME_MAX_LEN = 40
_K8S_NAME = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
# GCP project ids: 6-30 characters, lowercase letter first, no trailing hyphen.
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
# GCE label rules (stricter than Kubernetes'): keys start with a lowercase letter.
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABEL_KEYS = frozenset({MANAGED_BY_KEY, STACK_KEY, LEASE_EXPIRY_KEY, RUN_ID_KEY})


def gke_name(value: str) -> str:
    """Check a GKE cluster or node pool name."""
    if not _GKE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid GKE name; use 1-{GKE_NAME_MAX_LEN} characters: "
                         "a lowercase letter first, then lowercase letters, digits or hyphens, "
                         "not ending with a hyphen (e.g. 'gpu-node-pool')")
    return value


def k8s_name(value: str) -> str:
    """Check a Kubernetes object name that services are derived from (RFC 1035 label, short)."""
    if len(value) > K8S_NAME_MAX_LEN or not _K8S_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name; use 1-{K8S_NAME_MAX_LEN} characters: "
                         "a lowercase letter first, then lowercase letters, digits or hyphens, "
                         "not ending with a hyphen (e.g. 'deepseek-r1')")
    return value


def k8s_namespace(value: str) -> str:
    """Check a Kubernetes namespace name (RFC 1123 label, up to 63 characters)."""
    if len(value) > 63 or not re.fullmatch(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$", value):
        raise ValueError(f"{value!r} is not a valid namespace; use up to 63 lowercase letters, digits "
                         "or hyphens, starting and ending with a letter or digit (e.g. 'default')")
    return value


def project_id(value: str) -> str:
    """Check a GCP project id."""
    if not _PROJECT.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid GCP project id; use 6-30 characters: a lowercase "
                         "letter first, then lowercase letters, digits or hyphens, not ending with a "
                         "hyphen (e.g. 'my-gcp-project')")
    return value


def zone(value: str) -> str:
    """Check the format of a Compute Engine zone such as 'us-east5-a'."""
    if not _ZONE.fullmatch(value):
        raise ValueError(f"{value!r} is not a zone; use the form REGION-LETTER, e.g. 'us-east5-a'")
    return value


def zone_or_region(value: str) -> str:
    """Check a GKE location: a zone ('us-east5-a', zonal cluster) or a region ('us-east5')."""
    if not (_ZONE.fullmatch(value) or _REGION.fullmatch(value)):
        raise ValueError(f"{value!r} is not a zone or region; use e.g. 'us-east5-a' (zonal cluster) "
                         "or 'us-east5' (regional cluster)")
    return value


def is_zone(location: str) -> bool:
    """True when `location` has the form of a zone (not a region)."""
    return bool(_ZONE.fullmatch(location))


def region_of(location: str) -> str:
    """Return the region of a zone ('us-east5-a' -> 'us-east5'); a region is returned as is."""
    return location.rsplit("-", 1)[0] if _ZONE.fullmatch(location) else location


def labels(value: dict[str, str]) -> dict[str, str]:
    """Check GCE resource labels and keep our owner label keys reserved."""
    bad = []
    for key, val in value.items():
        if not _LABEL_KEY.fullmatch(key):
            bad.append(f"key {key!r} (a lowercase letter first, then up to 62 lowercase letters, "
                       "digits, '_' or '-')")
        elif key in RESERVED_LABEL_KEYS:
            bad.append(f"key {key!r} (reserved for owner labels: {sorted(RESERVED_LABEL_KEYS)})")
        if not _LABEL_VALUE.fullmatch(val):
            bad.append(f"value {val!r} of {key!r} (up to 63 lowercase letters, digits, '_' or '-')")
    if bad:
        raise ValueError("invalid labels: " + "; ".join(bad))
    return value


def env_vars(value: dict[str, str]) -> dict[str, str]:
    """Check environment variable names (C identifiers)."""
    bad = [k for k in value if not _ENV_NAME.fullmatch(k)]
    if bad:
        raise ValueError(f"invalid environment variable names {bad}; use letters, digits and '_', "
                         "not starting with a digit (e.g. 'VLLM_USE_V1')")
    return value


def regex(value: str) -> str:
    """Check that a regular expression compiles."""
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"{value!r} is not a valid regular expression ({e}); use Python `re` syntax, "
                         r"e.g. '(?i)red\W+yellow\W+blue\W+green'") from None
    return value


def not_blank(value: str) -> str:
    """Check that a string has some non-whitespace content."""
    if not value.strip():
        raise ValueError(f"{value!r} is empty; give a non-empty text")
    return value


def timezone(value: str) -> str:
    """Check an IANA timezone name."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{value!r} is not a known IANA timezone; use e.g. 'UTC' or "
                         "'America/New_York'") from None
    return value


def http_url(value: str) -> str:
    """Check an http(s) base URL (scheme required: the REST client needs it to pick http or https)."""
    if not re.fullmatch(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ValueError(f"{value!r} is not an http(s) URL; use e.g. 'http://127.0.0.1:8089' or "
                         "'https://container.googleapis.com'")
    return value.rstrip("/")
