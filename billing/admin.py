"""What every model admin of the project shares: writes go through the services.

The admin reads an object to build its form without a lock, so it must never write that read back.
Its saves and deletes call the services (`save_model` / `delete_model` in each admin), which lock the
row, decide on its current state and write only what changed. When the state moved meanwhile (a
payment landed, the draft was sent) the service refuses; here that refusal becomes a message on
the page, with everything of the request rolled back (the admin runs each change in a transaction),
instead of a 500. A save that changes nothing writes nothing: no service call, no UPDATE, no
"No fields changed." entry in the admin's log. The bulk "delete selected" action, which deletes a
queryset without the services, is not offered.

Every owned object's list shows its organization and filters and searches by it; the organization
is chosen when an object is made and read-only after (a row never moves to another tenant). What an
operator creates records them as its `created_by`, as the API records the member or key.
"""

from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist
from django.http import HttpResponseRedirect
from django.urls import reverse

from billing.exceptions import BillingError
from billing.models import IdempotencyKey


class RefusalsAsMessages:
    """A service's refusal (a domain error, or the object gone meanwhile) during a save or a delete
    becomes a message on the page, with everything of the request rolled back (the admin runs each
    change in a transaction), instead of a 500."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (BillingError, ObjectDoesNotExist) as refused:
            return self._refused(request, refused, object_id)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except (BillingError, ObjectDoesNotExist) as refused:
            return self._refused(request, refused, object_id)

    def _refused(self, request, refused: Exception, object_id) -> HttpResponseRedirect:
        """Say why, and show the object as it now is (or the list, if it is gone)."""
        message = refused.message if isinstance(refused, BillingError) else "It no longer exists."
        self.message_user(request, f"Not saved: {message}", messages.ERROR)
        opts = self.opts
        if object_id is not None and self.get_queryset(request).filter(pk=object_id).exists():
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id])
        else:
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return HttpResponseRedirect(url)


class ServiceWriteAdmin(RefusalsAsMessages, admin.ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        owned = any(field.name == "organization" for field in self.opts.fields)
        if owned and obj is not None and "organization" not in readonly:
            readonly.append("organization")  # an object never moves to another organization
        return readonly

    # Each admin names its services: create(organization, fields, actor=the operator) -> the new
    # object, update(obj, changed, actor=...) with only the fields the operator changed,
    # delete(obj, actor=...). The operator is the actor their events name.
    def create_object(self, organization, fields: dict, *, actor):
        raise ImproperlyConfigured(f"{type(self).__name__} must write through a service")

    def update_object(self, obj, changed: dict, *, actor) -> None:
        raise ImproperlyConfigured(f"{type(self).__name__} must write through a service")

    def delete_object(self, obj, *, actor) -> None:
        raise ImproperlyConfigured(f"{type(self).__name__} must write through a service")

    def save_model(self, request, obj, form, change):
        if change:
            changed = {name: form.cleaned_data[name] for name in form.changed_data}
            if changed:
                self.update_object(obj, changed, actor=request.user)
        else:
            fields = {name: value for name, value in form.cleaned_data.items() if name != "organization"}
            obj.pk = self.create_object(obj.organization, fields, actor=request.user).pk

    def delete_model(self, request, obj):
        self.delete_object(obj, actor=request.user)

    def log_change(self, request, obj, message):
        if not message:  # neither the form nor an inline changed: nothing was written, log nothing
            obj._admin_saved_nothing = True
            return None
        return super().log_change(request, obj, message)

    def response_change(self, request, obj):
        if not getattr(obj, "_admin_saved_nothing", False):
            return super().response_change(request, obj)
        self.message_user(request, f"Nothing changed: {obj} was not saved.", messages.INFO)
        if "_continue" in request.POST:
            return HttpResponseRedirect(request.get_full_path())
        return self.response_post_save_change(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class ReadOnlyInline(admin.TabularInline):
    """Rows shown on their parent's page, never a form: history, payments, keys."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Operators can look, never write: these rows are the ledger."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ["key", "organization", "operation", "response_status", "created_at"]
    list_filter = ["organization", "operation", "response_status"]
    search_fields = ["key", "organization__name"]
    list_select_related = ["organization"]


def events_link(obj, object_type: str) -> str:
    """A link to the events of `obj` in the events app's admin (by URL name: this app sits below it)."""
    if obj is None or obj.pk is None:
        return "-"
    from django.urls import reverse
    from django.utils.html import format_html

    url = reverse("admin:events_event_changelist")
    return format_html(
        '<a href="{}?object_type={}&amp;object_id={}">Its events</a>', url, object_type, obj.pk
    )
