from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.password_validation import MinimumLengthValidator
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import ONE_LINE
from billing.schema import END_OF_STRING, bmp_class
from billing.serializers import (
    CachedFieldsMixin,
    CurrencyField,
    PlainRepresentationMixin,
    StrictCharField,
    StrictEmailField,
    StrictIntegerField,
    StrictModelSerializer,
)
from users.models import (
    API_KEY_ROLE_CHOICES,
    INVOICE_PREFIX_VALIDATOR,
    MAX_PAYMENT_TERMS_DAYS,
    MAX_REMINDER_OFFSET,
    MAX_REMINDER_STEPS,
    ApiKey,
    Membership,
    Organization,
    Role,
)

User = get_user_model()

# Django's UnicodeUsernameValidator is `^[\w.@+-]+\Z`, with Python's Unicode-aware `\w`. No pattern
# means that in ECMA-262 without the `u` flag, the dialect the schema's patterns are read in by
# JavaScript clients: there `\w` is ASCII, `\p{L}` does not exist, and a character beyond U+FFFF is
# two surrogates. So the rule is the one a portable pattern can state exactly, and registration
# checks it with this very pattern, the one the schema publishes: the characters Python's `\w`
# matches in the Basic Multilingual Plane (letters and digits of every script, and "_"), and ".@+-".
_WORD_CHARACTERS = bmp_class(r"\w")
USERNAME_PATTERN = f"^[{_WORD_CHARACTERS}.@+-]+{END_OF_STRING}"
USERNAME_VALIDATOR = RegexValidator(
    USERNAME_PATTERN,
    message=(
        "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ "
        "characters (up to U+FFFF)."
    ),
    code="invalid",
)


def _password_min_length() -> int | None:
    for validator in password_validation.get_default_password_validators():
        if isinstance(validator, MinimumLengthValidator):
            return validator.min_length
    return None


class UserSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "email"]
        read_only_fields = fields


class OrganizationRefSerializer(PlainRepresentationMixin, serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class MembershipRefSerializer(OrganizationRefSerializer):
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)


class RegisteredSerializer(UserSerializer):
    organization = OrganizationRefSerializer(
        read_only=True, help_text="The new organization, owned by the new user."
    )

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "organization"]
        read_only_fields = fields


class ApiKeyRefSerializer(PlainRepresentationMixin, serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    prefix = serializers.CharField(read_only=True)


class MeSerializer(PlainRepresentationMixin, serializers.Serializer):
    """The caller: a member (their user, and the organization and role their token is bound to),
    or an API key (`username` null, `api_key` set)."""

    id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The user's id; null for an API key."
    )
    username = serializers.CharField(read_only=True, allow_null=True)
    email = serializers.CharField(read_only=True, allow_null=True)
    organization = OrganizationRefSerializer(
        read_only=True, help_text="The organization this credential acts for."
    )
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)
    organizations = MembershipRefSerializer(
        many=True,
        read_only=True,
        help_text="Every organization the user is a member of (for a key: its own).",
    )
    api_key = ApiKeyRefSerializer(
        read_only=True, allow_null=True, help_text="The key, when the caller is one."
    )


def _password_field() -> StrictCharField:
    # As sent (no trimming: login compares it untrimmed), and with the minimum length of Django's
    # validator stated, so that the schema says it and it is checked first.
    return StrictCharField(
        write_only=True,
        max_length=128,
        min_length=_password_min_length(),
        trim_whitespace=False,
        style={"input_type": "password"},
    )


class RegisterSerializer(StrictModelSerializer):
    password = _password_field()
    email = StrictEmailField(required=False, allow_blank=True, default="")
    organization_name = StrictCharField(
        required=False,
        max_length=200,
        validators=[ONE_LINE],  # the organization's own rule, answered on this field's name
        help_text="The new organization's name (default: the username).",
    )

    class Meta:
        model = User
        fields = ["id", "username", "password", "email", "organization_name"]
        read_only_fields = ["id"]
        # Not trimmed, as login does not trim: " alice" is refused, not taken as "alice".
        extra_kwargs = {"username": {"trim_whitespace": False}}

    def get_fields(self):
        fields = super().get_fields()
        fields["password"] = _password_field()  # the validators in force now (settings may change)
        username = fields["username"]
        username.validators = [
            USERNAME_VALIDATOR if isinstance(validator, UnicodeUsernameValidator) else validator
            for validator in username.validators
        ]
        return fields

    def validate_username(self, value: str) -> str:
        """The username as it is stored and as login looks it up: in NFKC form (Django's
        `normalize_username`, which `create_user` applies), so a fullwidth "nfvhahp" is "nfvhahp".
        Its form is checked as sent; its length once normalized too (a few characters expand)."""
        username = User.normalize_username(value)
        max_length = User._meta.get_field(User.USERNAME_FIELD).max_length
        if len(username) > max_length:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {max_length} characters once normalized (NFKC)."
            )
        return username

    def validate(self, attrs):
        candidate = User(username=attrs["username"], email=attrs.get("email", ""))
        try:
            password_validation.validate_password(attrs["password"], user=candidate)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class LoginSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150, trim_whitespace=False)
    password = StrictCharField(max_length=128, trim_whitespace=False, style={"input_type": "password"})
    organization = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="The id of the organization the token acts for (default: the user's oldest membership).",
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="Send it as `Authorization: Bearer <token>` (or, the same, `Authorization: Token <token>`)."
    )
    expiry = serializers.DateTimeField(help_text="When the token stops working.")
    organization = OrganizationRefSerializer(help_text="The organization the token acts for.")
    role = serializers.ChoiceField(choices=Role.choices, help_text="The member's role there (as it is now).")


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "integer", "minimum": -MAX_REMINDER_OFFSET, "maximum": MAX_REMINDER_OFFSET},
        "maxItems": MAX_REMINDER_STEPS,
        "uniqueItems": True,
    }
)
class ReminderDaysField(serializers.ListField):
    """Distinct days (the model refuses a repeated one; the schema says so with uniqueItems)."""


class OrganizationSerializer(CachedFieldsMixin, StrictModelSerializer):
    """The organization's profile and settings; PATCH changes what it is given (admins and owners)."""

    default_currency = CurrencyField(required=False)
    # Neither is trimmed: " INV-" is refused (a prefix has no spaces), not taken as "INV-".
    invoice_prefix = StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=20,
        validators=[INVOICE_PREFIX_VALIDATOR],
        help_text='Issued numbers are this prefix and six digits ("INV-000042"). Changing it keeps the sequence.',
    )
    time_zone = StrictCharField(
        required=False,
        trim_whitespace=False,
        max_length=64,
        help_text='An IANA time zone ("Europe/Paris"): what "today" means.',
    )
    payment_terms_days = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=MAX_PAYMENT_TERMS_DAYS,
        help_text="A new invoice's due date, when none is given: the issue date plus this many days.",
    )
    reminder_days = ReminderDaysField(
        child=StrictIntegerField(min_value=-MAX_REMINDER_OFFSET, max_value=MAX_REMINDER_OFFSET),
        required=False,
        max_length=MAX_REMINDER_STEPS,
        help_text="Days relative to the due date on which a reminder is sent (negative: before it).",
    )

    class Meta:
        model = Organization
        fields = ["id", *Organization.PROFILE_FIELDS, *Organization.SETTINGS_FIELDS, "created_at"]
        read_only_fields = ["id", "created_at"]


class MemberSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    user = UserSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = fields


class MemberCreateSerializer(serializers.Serializer):
    username = StrictCharField(
        max_length=150, trim_whitespace=False, help_text="An existing user's username."
    )
    role = serializers.ChoiceField(choices=Role.choices)


class MemberUpdateSerializer(serializers.Serializer):
    # Optional, as in any PATCH: a body without it changes nothing.
    role = serializers.ChoiceField(choices=Role.choices, required=False)


class ApiKeySerializer(CachedFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "role", "created_at", "last_used_at", "expires_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100)
    role = serializers.ChoiceField(choices=API_KEY_ROLE_CHOICES, help_text="Never `owner`.")
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="When the key stops working (default: never)."
    )


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(
        read_only=True, help_text="The key itself: shown this once, stored only as a hash."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields
