"""Users, organizations with their members, and API keys in the admin, held to the same rules as
the API: the admin is one more way in, never a way around a rule.

- An organization's settings are checked by `Organization.check_fields()` (its `clean()`, which the
  admin's form runs) and a change is written by `organization_update`.
- Members are added, re-roled and removed through `users.services` (`membership_add`,
  `membership_change_role`, `membership_remove`), which lock the organization's row and decide on
  a current count of its owners. The form checks the same rule first, so a save that would leave an
  organization without an owner is the form again with the error, and nothing written; a change
  that races another one is refused by the service (a message, everything rolled back).
- Deleting a user takes their memberships with them, so a user who is the last owner of an
  organization cannot be deleted (shown as what stands in the way, as for protected rows).
- API keys are listed and revoked (`api_key_revoke`), never made or edited here: a key's secret is
  shown once, by the API that makes it, and no form takes one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, ProtectedError
from django.forms.models import BaseInlineFormSet

from billing.admin import ReadOnlyAdmin, ReadOnlyInline, RefusalsAsMessages, ServiceWriteAdmin
from billing.exceptions import InUse
from users.models import ApiKey, Membership, Organization, Role, User
from users.services import (
    LastOwner,
    api_key_revoke,
    membership_add,
    membership_change_role,
    membership_remove,
    organization_update,
)

LAST_OWNER = (
    "An organization always keeps an owner: {organization} would have none. Make another member owner first."
)
NEW_WITHOUT_OWNER = "A new organization needs an owner: add a member with the role owner."
OWNERS_ONLY = "Only an owner grants or removes the owner role."


def caller_role_of(request) -> str:
    """The role an operator acts with on any organization: a superuser as an owner; other staff
    (with the model permissions) as an admin, who may not grant or remove `owner`."""
    return Role.OWNER if request.user.is_superuser else Role.ADMIN


def organizations_left_without_owner(user_ids: Iterable[int]) -> list[Organization]:
    """The organizations whose every owner is among `user_ids`: deleting those users would leave
    them with none."""
    user_ids = list(user_ids)
    owned = Membership.objects.filter(user_id__in=user_ids, role=Role.OWNER).values("organization_id")
    other_owner = Membership.objects.filter(organization_id=OuterRef("pk"), role=Role.OWNER).exclude(
        user_id__in=user_ids
    )
    return list(Organization.objects.filter(pk__in=owned).exclude(Exists(other_owner)))


# --- members -------------------------------------------------------------------------------------


class MembershipFormSet(BaseInlineFormSet):
    """Memberships as an inline of either side (an organization's members, a user's
    organizations), validated against the owner rules and saved through the services."""

    caller_role: str = Role.OWNER  # set per request by the inline (`caller_role_of`)

    def add_fields(self, form, index):
        super().add_fields(form, index)
        if form.instance.pk is not None:
            # A membership is of one user in one organization: an existing row changes its role
            # only (moving it would be a removal and an add, each with its own rules).
            for name in ("user", "organization"):
                if name in form.fields and name != self.fk.name:
                    form.fields[name].disabled = True

    def _organization_of(self, form) -> Organization:
        if self.fk.name == "organization":
            return self.instance
        return form.cleaned_data.get("organization") or form.instance.organization

    def _user_of(self, form) -> User:
        if self.fk.name == "user":
            return self.instance
        return form.cleaned_data.get("user") or form.instance.user

    def _deleted(self, form) -> bool:
        return self.can_delete and self._should_delete_form(form)

    def _added_forms(self) -> list:
        return [form for form in self.extra_forms if form.has_changed() and not self._deleted(form)]

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        existing = [form for form in self.initial_forms if form.instance.pk is not None]
        # The roles as they are now (the form's own instances already carry the posted ones).
        current = dict(
            Membership.objects.filter(pk__in=[form.instance.pk for form in existing]).values_list(
                "pk", "role"
            )
        )
        changes = []  # (organization, role before, role after)
        for form in existing:
            before = current.get(form.instance.pk)
            after = None if self._deleted(form) else form.cleaned_data.get("role")
            if before is not None and before != after:
                changes.append((self._organization_of(form), before, after))
        # A second membership of a member is refused before this (the formset's own check of
        # the unique organization and user), and again by `membership_add`.
        for form in self._added_forms():
            changes.append((self._organization_of(form), None, form.cleaned_data.get("role")))
        if self.caller_role != Role.OWNER and any(
            Role.OWNER in (before, after) for _, before, after in changes
        ):
            raise ValidationError(OWNERS_ONLY)
        self._check_owners_remain(changes)

    def _check_owners_remain(self, changes) -> None:
        # Per organization (by id; None: the one this page is making), how many owners it gains.
        gained: dict[int | None, int] = defaultdict(int)
        names: dict[int | None, Organization] = {}
        for organization, before, after in changes:
            gained[organization.pk] += (after == Role.OWNER) - (before == Role.OWNER)
            names[organization.pk] = organization
        if self.fk.name == "organization" and self.instance.pk is None and gained[None] < 1:
            raise ValidationError(NEW_WITHOUT_OWNER)
        for organization_id, change in gained.items():
            if organization_id is None or change >= 0:
                continue
            owners = Membership.objects.filter(organization_id=organization_id, role=Role.OWNER).count()
            if owners + change < 1:
                raise ValidationError(LAST_OWNER.format(organization=names[organization_id]))

    def save(self, commit=True):
        """Through the services, in an order that keeps an owner throughout: additions, then
        promotions to owner, then the other role changes, then removals. The admin reads the
        result (`new_objects`, `changed_objects`, `deleted_objects`) for its log."""
        self.new_objects, self.changed_objects, self.deleted_objects = [], [], []
        role_changes, removals = [], []
        for form in self.initial_forms:
            if self._deleted(form):
                removals.append(form.instance)
            elif "role" in form.changed_data:
                role_changes.append((form.instance, form.cleaned_data["role"]))
        for form in self._added_forms():
            membership = membership_add(
                organization_id=self._organization_of(form).pk,
                username=self._user_of(form).get_username(),
                role=form.cleaned_data["role"],
                caller_role=self.caller_role,
            )
            self.new_objects.append(membership)
        role_changes.sort(key=lambda change: change[1] != Role.OWNER)
        for membership, role in role_changes:
            changed = membership_change_role(
                organization_id=membership.organization_id,
                membership_id=membership.pk,
                role=role,
                caller_role=self.caller_role,
            )
            self.changed_objects.append((changed, ["role"]))
        for membership in removals:
            membership_remove(
                organization_id=membership.organization_id,
                membership_id=membership.pk,
                caller_role=self.caller_role,
            )
            self.deleted_objects.append(membership)
        return [*self.new_objects, *(membership for membership, _ in self.changed_objects)]


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    readonly_fields = ["created_at"]
    extra = 1

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.caller_role = caller_role_of(request)
        return formset


class OrganizationMemberInline(MembershipInline):
    verbose_name = "member"
    verbose_name_plural = "members"
    fk_name = "organization"
    fields = ["user", "role", "created_at"]
    autocomplete_fields = ["user"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


class UserMembershipInline(MembershipInline):
    verbose_name = "membership"
    verbose_name_plural = "memberships"
    fk_name = "user"
    fields = ["organization", "role", "created_at"]
    autocomplete_fields = ["organization"]
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("organization")


class ApiKeyInline(ReadOnlyInline):
    """The organization's keys, as the API lists them: shown, each linked to its page (where it is
    revoked); never made or changed here."""

    model = ApiKey
    verbose_name = "API key"
    verbose_name_plural = "API keys"
    fields = ["name", "prefix", "role", "created_at", "last_used_at", "expires_at", "revoked_at"]
    readonly_fields = fields
    show_change_link = True


# --- organizations -------------------------------------------------------------------------------


@admin.register(Organization)
class OrganizationAdmin(ServiceWriteAdmin):
    list_display = ["name", "legal_name", "time_zone", "default_currency", "invoice_prefix", "created_at"]
    list_filter = ["default_currency", "time_zone"]
    search_fields = ["name", "legal_name", "email", "tax_id"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": Organization.PROFILE_FIELDS}),
        ("Settings", {"fields": Organization.SETTINGS_FIELDS}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]
    inlines = [OrganizationMemberInline, ApiKeyInline]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "time_zone":
            field.help_text = (
                'An IANA time zone such as "Europe/Paris": what "today" is for this organization.'
            )
        return field

    def get_inline_instances(self, request, obj=None):
        # A new organization has no keys yet; its members inline is where its first owner is named.
        inlines = super().get_inline_instances(request, obj)
        return inlines if obj is not None else [i for i in inlines if not isinstance(i, ApiKeyInline)]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)  # organization_update, the fields changed
        else:
            # The form ran `clean()`, which is `check_fields()`; the first owner is saved with the
            # members inline (its form refuses an organization without one), in this transaction.
            obj.check_fields()
            obj.save()

    def update_object(self, obj, changed, *, actor):
        organization_update(organization_id=obj.pk, **changed)

    def delete_object(self, obj, *, actor):
        try:
            obj.delete()  # its members and API keys go with it; its books are PROTECTed
        except ProtectedError:
            raise InUse(
                "This organization has customers, invoices or payments and cannot be deleted."
            ) from None


# --- API keys ------------------------------------------------------------------------------------


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(revoked_at__isnull=True)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "prefix",
        "organization",
        "role",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["organization", "role", RevokedFilter]
    search_fields = ["name", "prefix", "organization__name"]
    list_select_related = ["organization"]
    fields = [
        "organization",
        "name",
        "prefix",
        "role",
        "digest",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    readonly_fields = fields
    actions = ["revoke"]

    # Read-only (ReadOnlyAdmin): a key is made by the API (or seed_demo), which shows its secret
    # once, and is revoked, never deleted: what a key made still says who made it.

    def has_revoke_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Revoke the selected API keys", permissions=["revoke"])
    def revoke(self, request, queryset):
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True).order_by("pk"):
            api_key_revoke(organization_id=api_key.organization_id, api_key_id=api_key.pk)
            revoked += 1
        self.message_user(request, f"{revoked} API keys revoked.", messages.SUCCESS)


# --- users ---------------------------------------------------------------------------------------


@admin.register(User)
class UserAdmin(RefusalsAsMessages, DjangoUserAdmin):
    inlines = [UserMembershipInline]
    list_filter = [*DjangoUserAdmin.list_filter, "memberships__organization"]

    def get_inline_instances(self, request, obj=None):
        # The add page is Django's two-step one (username and password first), with no inlines.
        return super().get_inline_instances(request, obj) if obj is not None else []

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, each through delete_model's check
        return actions

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        stranded = organizations_left_without_owner(obj.pk for obj in objs)
        protected = [*protected, *(f"Organization: {org} (its last owner)" for org in stranded)]
        return deleted, model_count, perms_needed, protected

    def delete_model(self, request, obj):
        with transaction.atomic():
            # The organizations' rows first, as the membership services lock them, so a concurrent
            # change of their owners queues behind this decision.
            owned = Membership.objects.filter(user=obj, role=Role.OWNER).values_list(
                "organization_id", flat=True
            )
            list(Organization.objects.select_for_update().filter(pk__in=list(owned)).order_by("pk"))
            stranded = organizations_left_without_owner([obj.pk])
            if stranded:
                raise LastOwner(LAST_OWNER.format(organization=stranded[0]))
            obj.delete()
