from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db import IntegrityError, transaction
from knox.models import AuthToken
from rest_framework.exceptions import ValidationError

User = get_user_model()

INVALID_CREDENTIALS = "Unable to log in with the provided credentials."


def user_register(*, username: str, password: str, email: str = "") -> User:
    """Create a user; a username taken by a concurrent request is a 400 on `username`.

    `create_user` stores the username in NFKC form (`User.normalize_username`), which is the form
    `user_login` looks it up in: either spelling of a name reaches the same account.
    """
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError:
        raise ValidationError({"username": ["A user with that username already exists."]}) from None


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
        raise ValidationError({"non_field_errors": [INVALID_CREDENTIALS]}, code="invalid_credentials")
    instance, token = AuthToken.objects.create(user=user)
    user_logged_in.send(sender=user.__class__, request=request, user=user)
    return instance, token
