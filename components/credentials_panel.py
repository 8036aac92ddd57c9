"""A device's broker credentials (SPEC 8.1), for admins: what is live, issuing, revoking.

The secret of a new credential is shown once, in a dialog with copy and download buttons:
the platform keeps no readable copy. The panel calls the page back to load, issue and
revoke; it never reads storage itself.
"""

import functools
from collections.abc import Awaitable, Callable

from nicegui import ui

from app.core.models import CredentialKind, DeviceCredential
from app.services.credentials import IssuedCredentials
from components.confirm_dialog import confirm
from components.relative_time import absolute_time, time_label
from components.section import section

WORDS = {CredentialKind.PASSWORD: "password", CredentialKind.CERTIFICATE: "certificate"}
ICONS = {CredentialKind.PASSWORD: "password", CredentialKind.CERTIFICATE: "verified_user"}
_ROW = "w-full items-start gap-3 py-2 border-b border-slate-100 last:border-b-0 no-wrap"
_ICON_BUTTON = "flat round dense size=sm color=secondary"

# each callback answers None (or False) when it refused or failed, having said why
Load = Callable[[], Awaitable[list[DeviceCredential] | None]]
Issue = Callable[[CredentialKind], Awaitable[IssuedCredentials | None]]
Revoke = Callable[[], Awaitable[bool]]


def _expiry(credential: DeviceCredential) -> str:
    if credential.expires_at is None:
        return "Valid until revoked"
    return f"Expires {absolute_time(credential.expires_at)}"


def credential_row(credential: DeviceCredential) -> ui.row:
    """One live credential: its kind, when it was issued, fingerprint and expiry."""
    kind = CredentialKind(credential.kind)
    with ui.row().classes(_ROW) as line:
        ui.icon(ICONS[kind], size="xs").classes("text-slate-400 mt-0.5")
        with ui.column().classes("gap-0.5 min-w-0"):
            with ui.row().classes("items-baseline gap-1.5 text-sm"):
                ui.label(WORDS[kind].capitalize()).classes("font-medium text-slate-800")
                ui.label("issued").classes("text-slate-500")
                time_label(credential.created_at).classes("text-slate-500")
            fingerprint = ui.label(credential.fingerprint).classes(
                "font-mono text-[11px] leading-4 text-slate-600 break-all"
            )
            fingerprint.tooltip("Fingerprint")
            ui.label(_expiry(credential)).classes("text-xs text-slate-500")
    return line.mark(f"credential-{kind.lower()}")


def _copy(text: str, what: str) -> None:
    ui.clipboard.write(text)
    ui.notify(f"{what} copied", type="info")


def _download(text: str, filename: str) -> None:
    ui.download.content(text.encode(), filename, "application/octet-stream")


def _secret_field(label: str, text: str, *, mark: str, file: tuple[str, str] | None) -> None:
    """A read-only copy of `text` with a copy button, and one to download `file` (name, text)."""
    many = "\n" in text.strip()
    field = ui.textarea(label, value=text) if many else ui.input(label, value=text)
    rows = "rows=3 " if many else ""
    field.props(f"readonly outlined dense stack-label {rows}input-class='font-mono text-xs'")
    with field.classes("w-full").mark(f"secret-{mark}"), field.add_slot("append"):
        ui.button(icon="content_copy", on_click=lambda: _copy(text, label)).props(
            _ICON_BUTTON
        ).tooltip(f"Copy {label.lower()}").mark(f"copy-{mark}")
        if file is not None:
            filename, content = file
            ui.button(icon="download", on_click=lambda: _download(content, filename)).props(
                _ICON_BUTTON
            ).tooltip(f"Download {filename}").mark(f"download-{mark}")


class SecretDialog(ui.dialog):
    """The secret of a new credential, shown this once; closing it forgets it."""

    def __init__(self, issued: IssuedCredentials) -> None:
        """Show what `issued` holds: username and password, or certificate and key; the CA."""
        super().__init__()
        self.props("persistent")  # a click beside it must not lose a secret never shown again
        self.on_value_change(lambda event: None if event.value else self.delete())
        with self, ui.card().classes("w-[36rem] max-w-full p-6 gap-3").mark("secret-dialog"):
            kind = "password" if issued.password is not None else "certificate"
            with ui.row().classes("items-center gap-3 no-wrap"):
                ui.icon("key", size="sm").classes("text-primary")
                ui.label(f"New {kind} for the device").classes("text-lg font-semibold")
            with ui.row().classes(
                "w-full items-start gap-2 no-wrap rounded-md bg-amber-50 px-3 py-2 "
                "text-sm text-amber-900 ring-1 ring-inset ring-amber-600/30"
            ):
                ui.icon("warning", size="xs").classes("mt-0.5")
                ui.label(
                    f"Copy or download the {kind} now: it is not stored and will not be shown "
                    f"again. It replaces the device's previous {kind}, if any."
                ).mark("shown-once")
            self._fields(issued)
            with ui.row().classes("w-full justify-end pt-2"):
                ui.button("Done", on_click=self.close).props("unelevated no-caps").mark(
                    "secret-done"
                )

    @staticmethod
    def _fields(issued: IssuedCredentials) -> None:
        name = issued.username
        _secret_field("Username", name, mark="username", file=None)
        if issued.password is not None:
            login = f"username: {name}\npassword: {issued.password}\n"
            _secret_field(
                "Password", issued.password, mark="password", file=(f"{name}-password.txt", login)
            )
        if issued.certificate_pem is not None and issued.private_key_pem is not None:
            certificate = (f"{name}.crt", issued.certificate_pem)
            _secret_field(
                "Certificate", issued.certificate_pem, mark="certificate", file=certificate
            )
            key = (f"{name}.key", issued.private_key_pem)
            _secret_field("Private key", issued.private_key_pem, mark="key", file=key)
        ca = ("ca.pem", issued.ca_certificate_pem)
        _secret_field("CA certificate", issued.ca_certificate_pem, mark="ca", file=ca)


class CredentialsPanel:
    """The Credentials section: the live credentials, Issue password / certificate, Revoke all."""

    def __init__(self, *, load: Load, issue: Issue, revoke: Revoke) -> None:
        """The page's callbacks; each runs its service off the event loop."""
        self._load = load
        self._issue = issue
        self._revoke = revoke
        self.live: list[DeviceCredential] = []
        self._body: ui.column | None = None
        self._list: ui.column | None = None
        self._revoke_button: ui.button | None = None
        self._issuing = False  # a double click must not issue twice (and show a dead secret)

    def create(self) -> None:
        """The section, filled once the credentials are loaded."""
        with section("Credentials", icon="key") as self._body:
            with ui.column().classes("w-full gap-0") as self._list:
                ui.spinner(size="sm").classes("my-2")
            with ui.row().classes("w-full items-center gap-2 pt-3"):
                for kind in CredentialKind:
                    ui.button(
                        f"Issue {WORDS[kind]}",
                        icon=ICONS[kind],
                        on_click=functools.partial(self.issue, kind),
                    ).props("outline no-caps dense color=secondary").classes("px-2").mark(
                        f"issue-{kind.lower()}"
                    )
                ui.space()
                self._revoke_button = ui.button("Revoke all", on_click=self.revoke)
                self._revoke_button.props("flat no-caps dense color=negative").mark("revoke-all")
                self._revoke_button.disable()
        ui.timer(0, self.reload, once=True)  # after the page is up: the load runs off the loop

    async def reload(self) -> None:
        """Load the live credentials again and show them."""
        found = await self._load()
        if found is not None:
            self.show(found)

    def show(self, found: list[DeviceCredential]) -> None:
        """List `found`, or say that the device cannot connect."""
        assert self._list is not None and self._revoke_button is not None  # made by create()
        self.live = found
        self._list.clear()
        with self._list:
            if not found:
                with ui.row().classes("items-center gap-2 py-1 text-sm text-slate-500"):
                    ui.icon("key_off", size="xs").classes("text-slate-400")
                    ui.label("No credentials: the device cannot connect to the broker.").mark(
                        "no-credentials"
                    )
            for credential in found:
                credential_row(credential)
        self._revoke_button.set_enabled(bool(found))

    async def issue(self, kind: CredentialKind) -> None:
        """Issue a credential (asking first when it replaces one) and show its secret once."""
        if self._issuing:
            return
        self._issuing = True
        try:
            issued = await self._confirmed_issue(kind)
        finally:
            self._issuing = False
        if issued is None:
            return
        assert self._body is not None  # made by create()
        with self._body:
            SecretDialog(issued).open()
        await self.reload()

    async def _confirmed_issue(self, kind: CredentialKind) -> IssuedCredentials | None:
        assert self._body is not None  # made by create()
        word = WORDS[kind]
        if any(credential.kind == kind for credential in self.live):
            with self._body:
                replace = await confirm(
                    f"Replace the {word}?",
                    f"The device's current {word} stops working at once: the device cannot "
                    "connect until it is given the new one.",
                    action=f"Issue new {word}",
                    dismiss="Keep it",
                )
            if not replace:
                return None
        return await self._issue(kind)

    async def revoke(self) -> None:
        """Ask, then revoke every credential of the device."""
        assert self._body is not None  # made by create()
        with self._body:
            confirmed = await confirm(
                "Revoke all credentials?",
                "The broker disconnects the device within seconds, and it cannot connect "
                "again until it is issued new credentials.",
                action="Revoke all",
                dismiss="Keep them",
            )
        if confirmed and await self._revoke():
            await self.reload()
