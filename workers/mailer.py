"""Email over SMTP: per-store server settings, MIME building, and error classification.

A store's `settings.smtp` ({"host", "port", "username", "password", "security":
none|starttls|tls, "from_email", "from_name"}) overrides the global `WOOFLOW_SMTP_*`
settings key by key. Sending is async (aiosmtplib), so a slow mail server occupies no
thread and holds back no other command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from html.parser import HTMLParser
from typing import Any

import aiosmtplib

from wooflow.settings import Settings
from wooflow.stores import Store
from wooflow.workers.errors import ActionError, TransientError


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    security: str = "none"  # none | starttls | tls
    from_email: str = "wooflow@localhost"
    from_name: str = ""
    timeout: float = 30.0


def smtp_config(settings: Settings, store: Store) -> SmtpConfig:
    own: dict[str, Any] = dict(store.settings.get("smtp") or {})
    security = str(own.get("security", settings.smtp_security)).lower()
    if security not in ("none", "starttls", "tls"):
        raise ActionError(f"store {store.id}: smtp.security must be none, starttls or tls, not {security!r}")
    password = own.get("password")
    if password is None:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    return SmtpConfig(
        host=str(own.get("host", settings.smtp_host)), port=int(own.get("port", settings.smtp_port)),
        username=str(own.get("username", settings.smtp_username)), password=str(password), security=security,
        from_email=str(own.get("from_email", settings.smtp_from)), from_name=str(own.get("from_name", store.name)),
        timeout=float(own.get("timeout", settings.smtp_timeout_s)),
    )


class _TextOf(HTMLParser):
    """A plain-text rendering of an HTML body, for emails whose template has no text part."""

    BLOCK = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n")
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        if tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOf()
    parser.feed(html)
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n\s*\n\s*(\n\s*)+", "\n\n", text).strip() + "\n"


def build_message(cfg: SmtpConfig, *, to: str, subject: str, text: str, html: str | None, message_id: str,
                  headers: dict[str, str] | None = None, reply_to: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    try:
        msg["To"] = Address(addr_spec=to)
    except (ValueError, IndexError) as exc:
        raise ActionError(f"invalid recipient address {to!r}") from exc
    msg["From"] = formataddr((cfg.from_name, cfg.from_email)) if cfg.from_name else cfg.from_email
    msg["Subject"] = subject.replace("\r", " ").replace("\n", " ")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if reply_to:
        msg["Reply-To"] = reply_to
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


class Mailer:
    async def send(self, cfg: SmtpConfig, message: EmailMessage) -> str:
        """Send; raise TransientError (4xx, network) or ActionError (5xx) with the server's words."""
        try:
            errors, reply = await aiosmtplib.send(
                message, hostname=cfg.host, port=cfg.port, username=cfg.username or None,
                password=cfg.password or None, use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls", timeout=cfg.timeout)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            text = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
            if codes and all(400 <= c < 500 for c in codes):
                raise TransientError(f"SMTP refused recipients for now: {text}") from exc
            raise ActionError(f"SMTP refused recipients: {text}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise TransientError(f"SMTP {exc.code}: {exc.message}") from exc
            raise ActionError(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientError(f"SMTP {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}") from exc
        if errors:
            raise ActionError("SMTP refused recipients: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        return reply
