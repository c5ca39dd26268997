"""Who acts, and for whom: users, the organizations they bill for, their memberships (roles), the
tokens that bind a login to one membership, and organizations' API keys.

Model-side only: nothing here imports DRF. The roles' meaning is `users.roles`; authentication is
`users.auth`; the writes are `users.services`.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
import zoneinfo
from functools import cache
from typing import Union

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from knox.models import AbstractAuthToken

from billing.currencies import CURRENCY_CHOICES, CURRENCY_CODES
from billing.exceptions import BusinessRuleViolation
from billing.models import ONE_LINE


class User(AbstractUser):
    """A person who logs in. What they may do is not here: it is their role in the organization
    their token is bound to (`Membership`)."""

    class Meta(AbstractUser.Meta):
        pass


class Role(models.TextChoices):
    """From least to most (users.roles holds what each may do)."""

    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"


API_KEY_ROLES = (Role.ADMIN, Role.MEMBER, Role.VIEWER)
API_KEY_ROLE_CHOICES = [(role.value, role.label) for role in API_KEY_ROLES]

INVOICE_PREFIX_PATTERN = r"^[A-Za-z0-9\-_/.]{0,20}\Z"
INVOICE_PREFIX_VALIDATOR = RegexValidator(
    INVOICE_PREFIX_PATTERN,
    message='An invoice prefix is up to 20 characters of letters, digits and "-", "_", "/", ".".',
    code="invalid",
)
DEFAULT_REMINDER_DAYS = (-3, 1, 7, 14)
MAX_REMINDER_STEPS = 10
MAX_REMINDER_OFFSET = 365
MAX_PAYMENT_TERMS_DAYS = 3650


@cache
def time_zones() -> frozenset[str]:
    """The IANA time zone names this machine knows (the system's tzdata, or the `tzdata` package)."""
    return frozenset(zoneinfo.available_timezones())


def default_time_zone() -> str:
    return settings.TIME_ZONE


def default_organization_currency() -> str:
    return settings.DEFAULT_CURRENCY


def default_reminder_days() -> list[int]:
    return list(DEFAULT_REMINDER_DAYS)


class Organization(models.Model):
    """The business that bills: the tenant. Every owned row carries one (billing.models.OwnedModel)."""

    # What the organization itself may change (the API's PATCH, the admin's form): its profile,
    # printed on documents, and the settings that shape its invoices.
    PROFILE_FIELDS = ("name", "legal_name", "email", "phone", "address", "tax_id")
    SETTINGS_FIELDS = (
        "time_zone",
        "default_currency",
        "invoice_prefix",
        "payment_terms_days",
        "invoice_footer",
        "reminder_days",
    )

    name = models.CharField(max_length=200, validators=[ONE_LINE])
    legal_name = models.CharField(max_length=200, blank=True, validators=[ONE_LINE])
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=50, blank=True)
    address = models.TextField(blank=True, max_length=2000)
    tax_id = models.CharField(max_length=50, blank=True)
    time_zone = models.CharField(max_length=64, default=default_time_zone)
    default_currency = models.CharField(
        max_length=3, choices=CURRENCY_CHOICES, default=default_organization_currency
    )
    invoice_prefix = models.CharField(
        max_length=20, default="INV-", blank=True, validators=[INVOICE_PREFIX_VALIDATOR]
    )
    payment_terms_days = models.PositiveSmallIntegerField(
        default=30, validators=[MaxValueValidator(MAX_PAYMENT_TERMS_DAYS)]
    )
    invoice_footer = models.TextField(blank=True, max_length=2000)
    reminder_days = models.JSONField(default=default_reminder_days, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(name=""), name="organization_name_not_blank"),
            models.CheckConstraint(
                condition=Q(payment_terms_days__lte=MAX_PAYMENT_TERMS_DAYS),
                name="organization_payment_terms_days_range",
            ),
            models.CheckConstraint(
                condition=Q(default_currency__in=sorted(CURRENCY_CODES)),
                name="organization_default_currency_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def today(self) -> datetime.date:
        """The date now in the organization's time zone: the default issue date and payment date,
        and what `mark_overdue` compares due dates with."""
        return timezone.localdate(timezone=self.zone)

    def check_fields(self) -> None:
        """The rules on the settings, with an error on the field they concern (services and the
        admin's forms call it before every write)."""
        if not self.name or not self.name.strip():
            raise BusinessRuleViolation("An organization needs a name.", field="name")
        for name in ("name", "legal_name"):
            if not ONE_LINE.regex.search(getattr(self, name) or ""):
                raise BusinessRuleViolation(ONE_LINE.message, field=name)
        if self.time_zone not in time_zones():
            raise BusinessRuleViolation(
                f'"{self.time_zone}" is not an IANA time zone (e.g. "Europe/Paris").', field="time_zone"
            )
        if self.default_currency not in CURRENCY_CODES:
            raise BusinessRuleViolation(
                f'"{self.default_currency}" is not an active ISO 4217 currency code.',
                field="default_currency",
            )
        if not re.match(INVOICE_PREFIX_PATTERN, self.invoice_prefix or ""):
            raise BusinessRuleViolation(INVOICE_PREFIX_VALIDATOR.message, field="invoice_prefix")
        if not 0 <= self.payment_terms_days <= MAX_PAYMENT_TERMS_DAYS:
            raise BusinessRuleViolation(
                f"Payment terms are 0 to {MAX_PAYMENT_TERMS_DAYS} days.", field="payment_terms_days"
            )
        check_reminder_days(self.reminder_days)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from billing.exceptions import BillingError

        try:
            self.check_fields()
        except BillingError as exc:
            raise ValidationError({exc.field: exc.message} if exc.field else exc.message) from None


def check_reminder_days(days) -> None:
    message = (
        f"Reminder days are a list of up to {MAX_REMINDER_STEPS} distinct whole numbers of days "
        f"relative to the due date, from -{MAX_REMINDER_OFFSET} to {MAX_REMINDER_OFFSET}."
    )
    if not isinstance(days, list) or len(days) > MAX_REMINDER_STEPS:
        raise BusinessRuleViolation(message, field="reminder_days")
    for day in days:
        if isinstance(day, bool) or not isinstance(day, int) or abs(day) > MAX_REMINDER_OFFSET:
            raise BusinessRuleViolation(message, field="reminder_days")
    if len(set(days)) != len(days):
        raise BusinessRuleViolation(message, field="reminder_days")


class Membership(models.Model):
    """A user's place in an organization, with the role that limits what they may do there."""

    Role = Role

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"], name="membership_organization_user_unique"
            ),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]
        indexes = [models.Index(fields=["user", "created_at"], name="membership_user_created")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.organization_id} ({self.role})"


class MemberToken(AbstractAuthToken):
    """A knox token bound to one membership: it acts for that organization with that membership's
    role as it is now (read with the token, so a changed role applies at once), and goes with the
    membership (a removed member's tokens stop working at once)."""

    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="tokens")

    class Meta:
        swappable = "KNOX_TOKEN_MODEL"

    @property
    def organization(self) -> Organization:
        return self.membership.organization

    @property
    def organization_id(self) -> int:
        return self.membership.organization_id

    @property
    def role(self) -> str:
        return self.membership.role

    @property
    def actor(self) -> User:
        return self.user


API_KEY_SCHEME = "sk_"
API_KEY_PREFIX_CHARS = 12
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def hash_api_key(key: str) -> str:
    """SHA-256 of the whole key. A key carries 256 random bits, so a fast hash is as safe as a slow
    one (nothing to guess), and a lookup costs microseconds, not a password hasher's 100 ms."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def active(self, *, now: datetime.datetime | None = None):
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True)


class ApiKey(models.Model):
    """An organization's credential for a server integration: `sk_` + a visible prefix + a secret.

    Only the prefix (to find the row and to show which key is which) and a hash of the whole key are
    stored; the key itself is shown once, when it is made. A key has a role (never `owner`), no
    expiry unless `expires_at` is set, and stops working at once when revoked (the row stays, so
    the invoices and payments it made still say who made them).
    """

    Role = Role
    # How often `last_used_at` is written at most: a key used 1,000 times a minute writes it once.
    LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=len(API_KEY_SCHEME) + API_KEY_PREFIX_CHARS, unique=True)
    digest = models.CharField(max_length=64)
    role = models.CharField(max_length=10, choices=Role.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(role__in=[r.value for r in API_KEY_ROLES]), name="api_key_role_not_owner"
            ),
            models.CheckConstraint(condition=~Q(name=""), name="api_key_name_not_blank"),
        ]
        indexes = [models.Index(fields=["organization", "-created_at"], name="api_key_organization_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    # What a request's credential offers (users.auth): the same names as MemberToken's.
    is_authenticated = True
    is_anonymous = False
    username = None

    @property
    def actor(self) -> ApiKey:
        return self

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    @staticmethod
    def generate() -> tuple[str, str, str]:
        """A new key: (key, prefix, digest)."""
        prefix = API_KEY_SCHEME + "".join(
            secrets.choice(_PREFIX_ALPHABET) for _ in range(API_KEY_PREFIX_CHARS)
        )
        key = f"{prefix}_{secrets.token_urlsafe(32)}"
        return key, prefix, hash_api_key(key)

    @staticmethod
    def prefix_of(key: str) -> str | None:
        """The prefix of something sent as a key, or None when it cannot be one of ours."""
        prefix_length = len(API_KEY_SCHEME) + API_KEY_PREFIX_CHARS
        if not key.startswith(API_KEY_SCHEME) or len(key) <= prefix_length or key[prefix_length] != "_":
            return None
        return key[:prefix_length]


Actor = Union[User, ApiKey]  # noqa: UP007 (a runtime alias, used in annotations across apps)


class CreatedBy(models.Model):
    """Who made a row: a member (`created_by_user`) or an API key; neither for the system."""

    created_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        editable=False,
    )
    created_by_api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        editable=False,
    )

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=Q(created_by_user__isnull=True) | Q(created_by_api_key__isnull=True),
                name="%(app_label)s_%(class)s_one_creator",
            )
        ]

    @property
    def created_by(self) -> Actor | None:
        return self.created_by_user if self.created_by_user_id else self.created_by_api_key

    def set_created_by(self, actor: Actor | None) -> None:
        self.created_by_user, self.created_by_api_key = actor_columns(actor)


def actor_columns(actor: Actor | None) -> tuple[User | None, ApiKey | None]:
    """(user, api key) for an actor, as the two columns that record one."""
    if actor is None:
        return None, None
    if isinstance(actor, ApiKey):
        return None, actor
    return actor, None


class ThrottleCounter(models.Model):
    """How many requests one client has made in the current window of one throttle.

    `key` is the throttle's scope and a keyed hash of the client's address (users/throttling.py), so
    it has a fixed length whatever the client sends, and no address is stored. The row is counted by
    one upsert and starts again at 1 when a new window starts; rows of windows that are over are
    deleted as new windows start.
    """

    key = models.CharField(primary_key=True, max_length=100)
    window_start = models.DateTimeField(db_index=True)
    count = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.key}: {self.count} since {self.window_start:%Y-%m-%d %H:%M:%S}"
