"""The `send_email` action: a message through the process's mailer (`ctx.services`), its
addresses checked (no control characters, one `@`) and its sender required."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from gateway.core.errors import InvalidDataError, RunError, UpstreamError, shown
from gateway.runtime.action_spec import Action, StepCheck
from gateway.runtime.context import RunContext
from gateway.runtime.services import MailError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in an address: `a@b.com\tx` is not `a@b.comx`
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")


def _addresses(value: Any, what: str) -> list[str]:
    """Each address of `value` (a text of one or more, comma-separated, or a list of such),
    as it goes in a header: every address a header names is one the message is sent to."""
    items = value if isinstance(value, list) else [value] if value else []
    found: list[str] = []
    for item in items:
        text = str(item).strip()
        pairs = [] if _CONTROL.search(text) else email.utils.getaddresses([text])
        if not pairs or not all(_ADDRESS.fullmatch(address) for _, address in pairs):
            raise InvalidDataError(f"send_email: {what}: {shown(text)!r} is not an e-mail "
                                   "address (or a comma-separated list of them)")
        found.extend([text] if len(pairs) == 1 else [_one(*pair) for pair in pairs])
    return found


def _one(name: str, address: str) -> str:
    """One address of a list as a header names it (`formataddr`, which takes ASCII
    addresses only; an internationalised one is written as it came, its name quoted)."""
    try:
        return email.utils.formataddr((name, address))
    except UnicodeEncodeError:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>' if name else address


def build_message(args: dict[str, Any], sender: str | None) -> tuple[EmailMessage, list[str]]:
    to, cc = _addresses(args.get("to"), "to"), _addresses(args.get("cc"), "cc")
    bcc = _addresses(args.get("bcc"), "bcc")
    if not to and not cc and not bcc:
        raise RunError("send_email needs at least one recipient (to, cc or bcc)")
    sender = str(args.get("from") or sender or "")
    if not sender:
        raise RunError("send_email needs a sender: from, or smtp.from in the settings")
    text, html = args.get("text"), args.get("html")
    if text is None and html is None:
        raise RunError("send_email needs text or html")
    message = EmailMessage()
    try:
        message["From"] = _addresses(sender, "from")[0]
        if to:
            message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        if args.get("reply_to"):
            message["Reply-To"] = ", ".join(_addresses(args["reply_to"], "reply_to"))
        message["Subject"] = str(args.get("subject") or "")
        message["Date"] = email.utils.format_datetime(datetime.now(UTC))
        message["Message-ID"] = email.utils.make_msgid()
    except ValueError as exc:  # a line break in a header: refused, never sent
        raise InvalidDataError(f"send_email: {shown(str(exc))}") from exc
    if text is not None:
        message.set_content(str(text))
        if html is not None:
            message.add_alternative(str(html), subtype="html")
    else:
        message.set_content(str(html), subtype="html")
    return message, [*to, *cc, *bcc]


async def send_email(ctx: RunContext, args: dict[str, Any]) -> Any:
    mailer = ctx.services.mailer
    if mailer is None:
        raise RunError("send_email needs an SMTP server: smtp.host in the settings"
                       if ctx.services.started else "send_email needs the process's mailer, "
                       "which this process did not start (serve, worker and run start it)")
    message, recipients = build_message(args, mailer.sender)
    plain = list(dict.fromkeys(email.utils.parseaddr(r)[1] for r in recipients))
    tracing = ctx.services.tracing
    opened = None if tracing is None else tracing.client("send_email", {
        "gateway.email.recipients": len(plain), "server.address": mailer.host,
        "server.port": mailer.port})  # how many, never who
    failed: str | None = None
    refused: dict[str, str] = {}
    try:
        refused = await mailer.send(message, plain)
    except MailError as exc:
        # the span says that it failed; the server's answer, which may name recipients,
        # stays in the run log
        failed = f"the SMTP server {mailer.host}:{mailer.port} did not take the message"
        raise UpstreamError(f"send_email: {exc}") from exc
    finally:
        if opened is not None:
            opened.close({"error.type": "MailError" if failed else None,
                          "gateway.email.refused": len(refused)}, error=failed)
    # The server took the message for some recipients and refused others: sent, and said.
    ctx.remark(recipients=len(plain) - len(refused), **({"refused": refused} if refused else {}))
    return {"message_id": message["Message-ID"], "recipients": len(plain) - len(refused),
            "refused": refused}


def check_email(check: StepCheck, args: Mapping[str, Any]) -> None:
    """A message has a sender: the step's `from`, or else the settings' `smtp.from`."""
    settings = check.settings
    if args.get("from") in (None, "") and settings is not None and not settings.smtp_sender:
        check.error(check.base + ("/from" if "from" in args else ""), "step.no-sender",
                    "send_email needs a sender: give the step `from`, or set smtp.from in "
                    "the settings")


ACTIONS = (Action("send_email", send_email, check=check_email, outbound=True),)
