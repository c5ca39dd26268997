from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.password_validation import MinimumLengthValidator
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from rest_framework import serializers

from billing.schema import END_OF_STRING, bmp_class
from billing.serializers import StrictCharField, StrictEmailField, StrictModelSerializer

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


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "email"]
        read_only_fields = fields


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

    class Meta:
        model = User
        fields = ["id", "username", "password", "email"]
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


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="Send it as `Authorization: Bearer <token>` (or, the same, `Authorization: Token <token>`)."
    )
    expiry = serializers.DateTimeField(help_text="When the token stops working.")
