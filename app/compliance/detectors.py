"""PII detectors: a linear-time candidate pattern each, then a validator, so near misses do not alert.

A detector's `pattern` is RE2 syntax (it joins the rule set's single multi-pattern scan); `validate`
looks at a candidate match and says whether it is the real thing (Luhn for cards, IBAN checksums,
valid SSN ranges, a parseable date of birth …). Detectors that need context require a keyword in the
pattern itself (passport, driver licence, medical record number, date of birth).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import phonenumbers
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException


@dataclass(frozen=True)
class Detector:
    key: str
    label: str
    pattern: str  # RE2 syntax; group 1, when present, is the sensitive part
    validate: Callable[[str, str], bool]  # (candidate, whole match) -> is it real


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _ssn(candidate: str, _match: str) -> bool:
    digits = _digits(candidate)
    if len(digits) != 9:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    # never issued: area 000, 666 and 900–999; group 00; serial 0000
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|65|64[4-9]|62)")


def _card(candidate: str, _match: str) -> bool:
    digits = _digits(candidate)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    return bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _iban(candidate: str, _match: str) -> bool:
    try:
        IBAN(candidate.replace(" ", ""))
    except (SchwiftyException, ValueError):
        return False
    return True


def _email(candidate: str, _match: str) -> bool:
    local, _, domain = candidate.rpartition("@")
    labels = domain.split(".")
    return bool(local) and len(labels) >= 2 and labels[-1].isalpha() and len(labels[-1]) >= 2 and all(labels)


def _phone(candidate: str, _match: str) -> bool:
    text = candidate.strip()
    # bare digit runs (order numbers, ids) are not phone numbers: ask for a + or the usual separators
    if not text.startswith("+") and not any(sep in text for sep in "()- ."):
        return False
    if len(_digits(text)) < 8:
        return False
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def _ip(candidate: str, _match: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return not address.is_unspecified


_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"


def _date_of_birth(candidate: str, _match: str) -> bool:
    text = candidate.strip().lower()
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    if re.search(r"[a-z]", text):  # "12 March 1980", "March 12, 1980"
        years = [n for n in numbers if n > 31]
        return len(years) == 1 and 1900 <= years[0] <= date.today().year
    if len(numbers) != 3:
        return False
    if numbers[0] > 31:  # 1980-03-12
        year, month, day = numbers
    else:  # 03/12/1980 or 12/03/1980
        first, second, year = numbers
        month, day = (first, second) if first <= 12 else (second, first)
        if year < 100:
            year += 1900 if year > date.today().year % 100 else 2000
    try:
        born = date(year, month, day)
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def _has_digit(candidate: str, _match: str) -> bool:
    return any(ch.isdigit() for ch in candidate) and len(candidate.strip("-")) >= 5


def _secret(_candidate: str, _match: str) -> bool:
    return True


_NEAR = r"[\s:#=\-]{0,6}(?:(?:no|num|number|id)\.?[\s:#=\-]{0,4})?"

DETECTORS: dict[str, Detector] = {
    d.key: d
    for d in (
        Detector("ssn", "US Social Security number", r"\b(\d{3}[- ]\d{2}[- ]\d{4})\b", _ssn),
        Detector("credit_card", "payment card number", r"\b((?:\d[ -]?){12,18}\d)\b", _card),
        Detector("iban", "IBAN", r"\b([A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})\b", _iban),
        Detector(
            "email", "email address", r"([A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})+)", _email
        ),
        Detector(
            "phone", "phone number", r"((?:\+\d{1,3}[\s.\-]?)?\(?\d{2,4}\)?[\s.\-]?\d{3,4}[\s.\-]?\d{3,4})", _phone
        ),
        Detector("ipv4", "IPv4 address", r"\b((?:\d{1,3}\.){3}\d{1,3})\b", _ip),
        Detector(
            "ipv6", "IPv6 address", r"((?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{1,4}){0,6})", _ip
        ),
        Detector(
            "date_of_birth",
            "date of birth",
            r"(?i)\b(?:dob|d\.o\.b\.|date of birth|birth ?date|born(?: on)?)[\s:,=\-]{0,6}"
            r"(\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}|\d{1,2}(?:st|nd|rd|th)? "
            + _MONTHS
            + r",? \d{4}|"
            + _MONTHS
            + r" \d{1,2}(?:st|nd|rd|th)?,? \d{4})",
            _date_of_birth,
        ),
        Detector("passport", "US passport number", r"(?i)\bpassport" + _NEAR + r"([A-Z0-9]{6,9})\b", _has_digit),
        Detector(
            "drivers_license",
            "driver's licence number",
            r"(?i)\b(?:driver'?s?\s?licen[cs]e|DL)" + _NEAR + r"([A-Z0-9\-]{5,15})\b",
            _has_digit,
        ),
        Detector(
            "medical_record_number",
            "medical record number",
            r"(?i)\b(?:MRN|medical record(?: number)?|patient id)" + _NEAR + r"([A-Z0-9\-]{5,12})\b",
            _has_digit,
        ),
        # secrets were already replaced by the masker before evaluation: what is left is its marker
        Detector("secret", "API key or secret", r"(\[REDACTED\])", _secret),
    )
}


def redact(text: str) -> str:
    """`123-45-6789` → `***-**-6789`: letters and digits hidden but the last few, separators kept."""
    alnum = [i for i, ch in enumerate(text) if ch.isalnum()]
    keep = set(alnum[-4:]) if len(alnum) >= 8 else set(alnum[-1:]) if len(alnum) >= 4 else set()
    return "".join(ch if (i in keep or not ch.isalnum()) else "*" for i, ch in enumerate(text))[:120]
