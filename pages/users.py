"""User management for admins: list, create, change role, disable and enable."""

import uuid

from nicegui import run, ui
from nicegui.events import ValueChangeEventArguments

from app.core import db
from app.core.auth import has_role
from app.core.errors import NotFoundError, ValidationError
from app.core.models import Role, User, UserCreate, UserUpdate
from app.services import users
from components.data_table import cell, data_table, row
from components.empty_state import empty_state, forbidden
from components.forms import clear_errors, show_error
from components.frame import frame, page_heading
from components.relative_time import time_label
from pages.auth import current_user, load_acting_user

COLUMNS = ["Email", "Name", "Role", "Active", "Created"]
ROLES = {role.value: role.value.capitalize() for role in Role}


def _create_user(data: UserCreate) -> str:
    with db.session_scope() as session:
        return users.create_user(session=session, data=data).email


def _update_user(user_id: uuid.UUID, data: UserUpdate) -> None:
    with db.session_scope() as session:
        users.update_user(session=session, user_id=user_id, data=data)


def _list_users() -> list[User]:
    with db.session_scope() as session:
        return users.list_users(session=session)


class UserForm(ui.dialog):
    """Email, name, role and initial password for a new account."""

    def __init__(self, table: "UserTable") -> None:
        """Build the dialog; errors stay on their field until the account is created."""
        super().__init__()
        self._table = table
        self.on_value_change(lambda event: None if event.value else self.delete())
        with self, ui.card().classes("w-[30rem] max-w-full p-6 gap-3").mark("user-form"):
            ui.label("New user").classes("text-lg font-semibold text-slate-900 pb-1")
            props = "outlined stack-label"
            self.email = ui.input("Email").props(f"{props} type=email").classes("w-full")
            self.name = ui.input("Name").props(props).classes("w-full")
            self.role = ui.select(ROLES, label="Role", value=Role.VIEWER.value)
            self.role.props(props).classes("w-full").mark("user-form-role")
            self.password = ui.input("Password", password=True, password_toggle_button=True)
            self.password.props(f'{props} hint="At least 8 characters"').classes("w-full")
            self.fields = {
                "email": self.email,
                "name": self.name,
                "role": self.role,
                "password": self.password,
            }
            with ui.row().classes("w-full justify-end gap-2 pt-2"):
                ui.button("Cancel", on_click=self.close).props("flat no-caps color=secondary")
                ui.button("Create user", on_click=self.save).props("unelevated no-caps").mark(
                    "user-form-save"
                )

    async def save(self) -> None:
        """Create the account; a ValidationError is shown under the field it names."""
        clear_errors(self.fields)
        if await load_acting_user(Role.ADMIN) is None:
            self.close()
            return
        data = UserCreate(
            email=self.email.value or "",
            name=self.name.value or None,
            role=Role(self.role.value),
            password=self.password.value or "",
        )
        try:
            email = await run.io_bound(_create_user, data)
        except ValidationError as error:
            show_error(self.fields, error)
            return
        if email is None:  # the app is shutting down
            return
        ui.notify(f"User {email} created", type="positive")
        self.close()
        await self._table.reload()


class UserTable:
    """Every account with inline role and active controls."""

    def __init__(self, me: User) -> None:
        """Remember who is signed in, to mark their own row."""
        self.me = me
        self.accounts: list[User] = []

    async def load(self) -> None:
        """Read every account (off the event loop)."""
        found = await run.io_bound(_list_users)
        if found is not None:  # None: the app is shutting down
            self.accounts = found

    async def reload(self) -> None:
        """Read the accounts again and redraw the table."""
        await self.load()
        self.show.refresh()

    async def _update(self, user: User, data: UserUpdate, done: str) -> None:
        if await load_acting_user(Role.ADMIN) is None:
            await self.reload()
            return
        try:
            await run.io_bound(_update_user, user.id, data)
        except (ValidationError, NotFoundError) as error:
            reason = getattr(error, "reason", str(error))
            ui.notify(f"{user.email}: {reason}", type="negative")
        else:
            ui.notify(done, type="positive")
        await self.reload()  # the table always shows what is stored

    @ui.refreshable_method
    def show(self) -> None:
        """The table of accounts, by email."""
        if not self.accounts:
            empty_state("group_off", "No users", "Create the first account with New user.")
            return
        with data_table(COLUMNS):
            for account in self.accounts:
                self._row(account)

    def _role_select(self, account: User) -> None:
        async def change(event: ValueChangeEventArguments) -> None:
            data = UserUpdate(role=Role(event.value))
            await self._update(account, data, f"{account.email} is now {event.value}")

        select = ui.select(ROLES, value=str(account.role), on_change=change)
        select.props("outlined dense options-dense").classes("w-36")
        select.mark(f"role-{account.email}")

    def _active_switch(self, account: User) -> None:
        async def change(event: ValueChangeEventArguments) -> None:
            done = f"{account.email} {'enabled' if event.value else 'disabled'}"
            await self._update(account, UserUpdate(is_active=event.value), done)

        text = "Active" if account.is_active else "Disabled"
        switch = ui.switch(text, value=account.is_active, on_change=change)
        switch.props("dense color=positive").classes("text-sm text-slate-600")
        switch.mark(f"active-{account.email}")

    def _row(self, account: User) -> None:
        tone = "text-slate-900" if account.is_active else "text-slate-400"
        with row().mark("user-row"):
            with cell(), ui.row().classes("items-center gap-2 no-wrap"):
                ui.label(account.email).classes(f"font-medium {tone}")
                if account.id == self.me.id:
                    ui.label("you").classes("text-xs text-slate-500 bg-slate-100 rounded px-1.5")
            with cell(classes="text-slate-600"):
                ui.label(account.name or "\u2014")  # an em dash for "no name"
            with cell():
                self._role_select(account)
            with cell():
                self._active_switch(account)
            with cell(classes="text-slate-600"):
                time_label(account.created_at, relative=False)


def create() -> None:
    """Register /users."""

    @ui.page("/users")
    async def users_page() -> None:
        user = current_user()
        table = UserTable(user)
        if has_role(user, Role.ADMIN):
            await table.load()
        with frame("Users", user=user):
            if not has_role(user, Role.ADMIN):
                forbidden("Only administrators can manage users. Ask an admin for access.")
                return
            with page_heading("Users", "Who can sign in, and what they may do"):
                ui.button(
                    "New user", icon="person_add", on_click=lambda: UserForm(table).open()
                ).props("unelevated no-caps").mark("new-user")
            with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200"):
                table.show()
