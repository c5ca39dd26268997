"""Drive the Django admin as an operator does: a logged-in staff user posting the change forms."""

import threading
from collections.abc import Callable
from contextlib import contextmanager

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import close_old_connections, connection, connections
from django.test import Client

from tests.live.admin_form import PostedFields


def operator_client() -> Client:
    user_model = get_user_model()
    operator = user_model.objects.filter(username="operator").first() or user_model.objects.create_superuser(
        "operator", "operator@example.com", "operator-password"
    )
    client = Client()
    client.force_login(operator)
    return client


def change_url(obj) -> str:
    return f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/change/"


def delete_url(obj) -> str:
    return f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/delete/"


def add_url(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/add/"


def _form_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    return str(value)


def change_form_data(client: Client, obj, **changes) -> dict:
    """The change form of `obj` as the admin renders it (its inlines included), with `changes`."""
    response = client.get(change_url(obj))
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    data = {form.add_prefix(name): _form_value(form[name].value()) for name in form.fields}
    # A field whose model default is callable (the issue date, the currency) is rendered with a
    # hidden "initial-" copy, which the browser posts back and the form compares with.
    data.update(
        {
            form.add_initial_prefix(name): _form_value(form[name].initial)
            for name, field in form.fields.items()
            if field.show_hidden_initial
        }
    )
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        data.update({management.add_prefix(n): _form_value(management[n].value()) for n in management.fields})
        for item in formset.forms:
            data.update({item.add_prefix(n): _form_value(item[n].value()) for n in item.fields})
    data.update({name: _form_value(value) for name, value in changes.items()})
    return data


def form_as_posted(client: Client, obj, **changes) -> dict:
    """The change page of `obj` as a browser would post it (read from its HTML), with `changes`."""
    response = client.get(change_url(obj))
    assert response.status_code == 200, response.status_code
    parser = PostedFields()
    parser.feed(response.content.decode())
    parser.fields.pop("csrfmiddlewaretoken", None)  # the test client does not check it
    return {**parser.fields, **{name: _form_value(value) for name, value in changes.items()}}


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


@contextmanager
def after_admin_reads(model, callback: Callable[[], None]):
    """Run `callback` right after the admin has read the object a change or delete acts on, before
    it decides and writes: the moment another writer's commit makes the admin's read stale."""
    model_admin = admin.site._registry[model]
    original = type(model_admin).get_object
    fired = []

    def get_object(self, request, object_id, from_field=None):
        obj = original(self, request, object_id, from_field)
        if request.method == "POST" and not fired:
            fired.append(True)
            callback()
        return obj

    type(model_admin).get_object = get_object
    try:
        yield
    finally:
        type(model_admin).get_object = original


def commit_in_another_thread(fn: Callable[[], object]) -> Callable[[], object]:
    """Run `fn` on its own connection and, on PostgreSQL, wait for it to commit; return a function
    that joins it and returns its result (or raises its exception).

    On SQLite the admin's transaction already holds the database's one write lock, so the other
    writer cannot commit in between: it queues, and commits once the admin's request is over (the
    serialized order that database gives).
    """
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc
        finally:
            close_old_connections()
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    if connection.vendor == "postgresql":
        thread.join(30)

    def join():
        thread.join(60)
        assert not thread.is_alive(), "the other writer hung"
        if "error" in result:
            raise result["error"]
        return result.get("value")

    return join
