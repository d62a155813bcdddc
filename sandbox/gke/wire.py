"""Strict parsing of request bodies and rendering of resources, per API version, with the official types.

Resources are stored as JSON dicts in the canonical proto3 JSON form (camelCase, enum names, int64 as
strings). Rendering parses the stored dict into the requested version's message (`container_v1` or
`container_v1beta1`) and serializes it back, so a v1 answer never carries a v1beta1-only field, and
enums come out as integers when the client asked for `enum-encoding=int` (as the REST transport does)
and as names otherwise (as `gcloud` expects).
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.cloud.container_v1 import types as v1
from google.cloud.container_v1beta1 import types as v1beta1
from google.protobuf import json_format

from sandbox.gke.errors import GkeError, invalid

VERSIONS = {"v1": v1, "v1beta1": v1beta1}

_UNKNOWN_FIELD = re.compile(r'has no field named "(?P<field>[^"]+)" at "(?P<at>[^"]+)"')


def parse_request(version: str, type_name: str, body: bytes) -> Any:
    """Parse `body` as `<version>.<type_name>`, rejecting unknown fields and bad values like GKE (400)."""
    message_type = getattr(VERSIONS[version], type_name)
    try:
        return message_type.from_json(body.decode() or "{}", ignore_unknown_fields=False)
    except (json_format.ParseError, UnicodeDecodeError, ValueError) as error:
        raise _invalid_payload(str(error)) from error


def _invalid_payload(text: str) -> GkeError:
    match = _UNKNOWN_FIELD.search(text)
    if match:
        # GKE's own wording; the location is the path below the request message.
        at = match["at"].split(".", 1)[1] if "." in match["at"] else match["at"]
        return invalid(f"Invalid JSON payload received. Unknown name \"{match['field']}\" at '{at}': "
                       "Cannot find field.")
    first_line = text.splitlines()[0] if text else "empty body"
    return invalid(f"Invalid JSON payload received. {first_line.rstrip('.')}.")


def to_stored(message: Any) -> dict[str, Any]:
    """The canonical JSON dict of a proto-plus message (camelCase, enum names, defaults omitted)."""
    return json_format.MessageToDict(type(message).pb(message))


def render(version: str, type_name: str, stored: dict[str, Any], *, enum_ints: bool) -> dict[str, Any]:
    """`stored` as the `version` API returns a `type_name`, dropping fields that version lacks."""
    message_type = getattr(VERSIONS[version], type_name)
    pb = message_type.pb(message_type())
    json_format.ParseDict(stored, pb, ignore_unknown_fields=True)
    return json_format.MessageToDict(pb, use_integers_for_enums=enum_ints)


def wants_enum_ints(query: dict[str, str]) -> bool:
    """Whether the client asked for integer enums (`?$alt=json;enum-encoding=int`)."""
    return "enum-encoding=int" in query.get("$alt", "")


def dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2).encode()
