"""Personal data in URLs: query-string values that are e-mails, phone numbers or named parameters (pure).

A page URL, a referrer or a landing URL often carries an address the site
put there itself (``/welcome?email=alice%40example.com``), URL-encoded, so the
plain e-mail pattern ingest scrubs payloads with never sees it. Every string
in an event's ``context`` and ``properties`` that looks like a URL with a
query string is parsed; a value is replaced by ``sha256:<hash>`` (hashed like
the identifier it is, so it can still be matched) when it

- decodes to an e-mail address;
- is a phone number in international form (``+``, 8 to 15 digits);
- belongs to a parameter named in ``O2O_URL_PII_PARAMS`` (``email``,
  ``phone``, ``tel``, ... by default), whatever it holds.

Other parameters (``utm_source``, a product id) and the rest of the URL stay
as they were. A quick byte search decides first whether an object can hold
such a URL at all, so events without one cost almost nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipeline.config import URL_PII_PARAMS
from pipeline.ingest.normalize import hash_pii, normalise_id

_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+[0-9][0-9 ().\-]{6,20}$")


class UrlScrubber:
    """Hashes the personal query-string values of the URLs in an event's objects."""

    def __init__(self, salt: str, phone_region: str = "", params: Collection[str] = URL_PII_PARAMS) -> None:
        self.salt = salt
        self.phone_region = phone_region
        self.params = frozenset(p.lower() for p in params)
        names = "|".join(re.escape(p) for p in sorted(self.params, key=len, reverse=True))
        named = rf"[?&;](?:{names})=" if names else r"(?!)"
        # an encoded @ or +, a literal one after =, or a named parameter: worth parsing
        self._candidate = re.compile(rf"(?i)%40|%2B|=[^&\"]*@|=\+|{named}".encode())

    def needs(self, encoded: bytes) -> bool:
        """True when ``encoded`` (a JSON object) may hold a URL with personal data."""
        return b"?" in encoded and self._candidate.search(encoded) is not None

    def scrub(self, value: Any) -> Any:
        """``value`` (an event's object) with every URL's personal query-string values hashed."""
        if isinstance(value, dict):
            return {key: self.scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if isinstance(value, str) and "?" in value and "=" in value:
            return self.scrub_url(value)
        return value

    def scrub_url(self, url: str) -> str:
        """``url`` with its personal query-string values hashed; unchanged when it has none."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        if not parts.query:
            return url
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        changed = False
        out = []
        for name, raw in pairs:
            hashed = self._hashed(name, raw)
            changed |= hashed is not None
            out.append((name, raw if hashed is None else hashed))
        if not changed:
            return url
        return urlunsplit(parts._replace(query=urlencode(out, safe=":@/")))

    def _hashed(self, name: str, value: str) -> str | None:
        text = value.strip()
        if not text or text.startswith("sha256:"):
            return None
        if _EMAIL.match(text):
            return "sha256:" + hash_pii(normalise_id("email", text), self.salt)
        if _PHONE.match(text):
            normal = normalise_id("phone", text, self.phone_region)
            return "sha256:" + hash_pii(normal or text, self.salt)
        if name.lower() in self.params:
            normal = normalise_id("phone", text, self.phone_region) or text.lower()
            return "sha256:" + hash_pii(normal, self.salt)
        return None
