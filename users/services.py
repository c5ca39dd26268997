"""Writes of accounts: registration and login. Domain errors only (`billing.exceptions`), whatever
the caller; the API's exception handler turns them into responses."""

from http import HTTPStatus

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db import IntegrityError, transaction
from knox.models import AuthToken

from billing.exceptions import BillingError, BusinessRuleViolation

User = get_user_model()

INVALID_CREDENTIALS = "Unable to log in with the provided credentials."


class RegistrationClosed(BillingError):
    """REGISTRATION_OPEN=0: this deployment takes no sign-ups."""

    code = "registration_closed"
    status_code = HTTPStatus.FORBIDDEN


class InvalidCredentials(BusinessRuleViolation):
    code = "invalid_credentials"


def user_register(*, username: str, password: str, email: str = "") -> User:
    """Create a user, if this deployment takes sign-ups (REGISTRATION_OPEN); a username taken by a
    concurrent request is a 400 on `username`.

    `create_user` stores the username in NFKC form (`User.normalize_username`), which is the form
    `user_login` looks it up in: either spelling of a name reaches the same account.
    """
    if not settings.REGISTRATION_OPEN:
        raise RegistrationClosed("Registration is closed.")
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError:
        raise BusinessRuleViolation("A user with that username already exists.", field="username") from None


def user_login(*, request, username: str, password: str) -> tuple[AuthToken, str]:
    """Check the credentials and issue a new token.

    The username is normalized as register stored it (NFKC, `User.normalize_username`; Django's
    own login form does the same), so a fullwidth "nfvhahp" logs in the user registered as
    "nfvhahp". An unknown user and a wrong password get the same answer (Django's backend also runs
    the password hasher for unknown users, so their timing matches too).
    """
    username = User.normalize_username(username)
    user = authenticate(request=request, username=username, password=password)
    if user is None:
        raise InvalidCredentials(INVALID_CREDENTIALS, field="non_field_errors")
    instance, token = AuthToken.objects.create(user=user)
    user_logged_in.send(sender=user.__class__, request=request, user=user)
    return instance, token
