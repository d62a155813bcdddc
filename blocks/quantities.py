"""Kubernetes resource quantities ("2", "500m", "32Gi", "1.5G") as numbers, for fit checks.

Only the quantity grammar the resource fields use: a decimal number with an optional binary (Ki..Ei),
decimal (k, M, G, T, P, E) or milli (m) suffix, or an exponent ("1e9"). The canonical string the user
wrote is what goes into the manifest; these numbers only decide whether a pod fits a machine.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "": Decimal(1), "m": Decimal("0.001"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<exp>[eE][+-]?[0-9]{1,3})?"
                       r"(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
GIB = Decimal(2) ** 30


def parse_quantity(text: str) -> Decimal:
    """Return the value of a non-negative Kubernetes quantity; raise ValueError if it is not one."""
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None or (match["exp"] and match["suffix"]):
        raise ValueError(f"{text!r} is not a Kubernetes quantity; use e.g. '2', '500m', '32Gi' or '1.5G'")
    try:
        number = Decimal(match["num"] + (match["exp"] or ""))
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"{text!r} is not a number") from None
    return number * _SUFFIX[match["suffix"] or ""]


def quantity_text(value: object) -> str:
    """Turn a YAML scalar (2, 0.5, "32Gi") into the string form Kubernetes manifests carry."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity; use e.g. '2', '500m' or '32Gi'")
    if isinstance(value, (int, float)):
        return format(Decimal(str(value)).normalize(), "f")
    return value  # type: ignore[return-value]  # a str (checked later) or a wrong type pydantic reports
